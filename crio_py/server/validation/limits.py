"""Every limit a CRI request is held to, in one place (the README's "Limits" section cites these).

Strings are counted in characters unless the name says bytes. A request over a limit is refused
with INVALID_ARGUMENT naming the field, before any of it reaches the domain: a limit here is what
keeps a hostile request from holding a handler (a 1 MB command held CreateContainer for 60 s)
or a monitor, or from reaching the kernel as a value it rejects later in a half-made object.
"""

from __future__ import annotations

# --- sizes --------------------------------------------------------------------------------------
# The whole request as gRPC receives it (kubelet's own default maximum message size).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Any string field without a limit of its own (names of things, references, options).
MAX_STRING = 4096
# Paths: PATH_MAX includes the terminating NUL; one component is at most NAME_MAX.
MAX_PATH = 4095
MAX_PATH_COMPONENT = 255
# Any repeated field or map without a limit of its own (mounts, devices, ports, sysctls...).
MAX_REPEATED = 1024
# One argument or one NAME=value environment entry: the kernel's MAX_ARG_STRLEN, NUL included.
MAX_ARG_BYTES = 128 * 1024 - 1
# A container's (or an exec's) whole argv plus environment: half the usual ARG_MAX of 2 MiB,
# so execve never fails with E2BIG for the pointers and the image's own environment.
MAX_EXEC_BYTES = 1024 * 1024
# Entries of command + args + envs (each entry at least a byte, so MAX_EXEC_BYTES bounds it too).
MAX_EXEC_ENTRIES = 65536
# Labels and annotations: Kubernetes' limit on a pod's annotations, for all keys and values of one map.
MAX_METADATA_MAP_BYTES = 256 * 1024
MAX_METADATA_KEY = 317  # a 253-character DNS prefix, '/', a 63-character name
MAX_METADATA_ENTRIES = 4096
# Credentials of PullImage (a registry token is a JWT of a few KiB).
MAX_CREDENTIAL = 64 * 1024
# Supplementary groups of one process: the kernel's NGROUPS_MAX.
MAX_SUPPLEMENTAL_GROUPS = 65536
# Names of pods, namespaces, uids and containers (a DNS subdomain); hostnames (DNS).
MAX_NAME = 253
MAX_HOSTNAME = 253

# --- numbers ------------------------------------------------------------------------------------
# uid/gid: 32 bits, and (uid_t)-1 means "unchanged" to the kernel.
MAX_ID = 2**32 - 2
# Timeouts of StopContainer and ExecSync are clamped to this: the largest wait poll()/epoll_wait()
# take in milliseconds (kubelet passes terminationGracePeriodSeconds, which may be anything).
MAX_TIMEOUT_SECONDS = (2**31 - 1) // 1000
# cpu.shares: the kernel's range is 2..262144. kubelet sends 2 as its minimum (MinShares); a
# request of 1 is raised to 2 (cgroup v2's weight conversion would fail on it); 0 means unset.
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262144
# CFS period and quota in microseconds: the kernel takes periods of 1 ms..1 s, quotas from 1 ms
# up to its max_cfs_runtime (2^44 - 1 us); -1 is "no limit".
MIN_CPU_PERIOD = 1000
MAX_CPU_PERIOD = 1_000_000
MIN_CPU_QUOTA = 1000
MAX_CPU_QUOTA = 2**44 - 1
# Memory: below CRI-O's minimum a container cannot even start its runtime's init; -1 is "no limit".
MIN_MEMORY_BYTES = 12 * 1024 * 1024
MAX_MEMORY_BYTES = 2**63 - 1
OOM_SCORE_ADJ_RANGE = (-1000, 1000)
# hugetlb limits are kernel counters of 63 bits.
MAX_HUGEPAGE_LIMIT = 2**63 - 1
# Ports (PortForward, port mappings).
MAX_PORT = 65535
