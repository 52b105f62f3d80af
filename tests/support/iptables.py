"""Host-wide iptables state that hostPort plugins leave behind, and its removal for tests."""

from __future__ import annotations

import shlex
import subprocess

# Chain families portmap plugins create once per host: the reference plugin's and ours.
HOSTPORT_PREFIXES = ("CNI-HOSTPORT-", "CRIOPY-HOSTPORT-")
BUILTIN = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")


def nat_rules() -> list[str]:
    out = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def remove_unused_hostport_chains() -> None:
    """Drop a portmap family's shared chains (and the jumps to them) once no pod uses them."""
    rules = nat_rules()
    for prefix in HOSTPORT_PREFIXES:
        if any(r.startswith(f"-A {prefix}DNAT ") for r in rules):
            continue  # some pod still maps a port: leave the family alone
        for rule in rules:
            words = shlex.split(rule)
            if words[:1] == ["-A"] and words[1] in BUILTIN and f"-j {prefix}" in rule:
                subprocess.run(["iptables", "-t", "nat", "-D", *words[1:]], capture_output=True)
        for rule in rules:
            if rule.startswith(f"-N {prefix}"):
                chain = rule.split()[1]
                subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
                subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)
