#!/usr/bin/env bash
# Install crio-py on a Debian machine and start the daemon.
#   sudo ./install.sh             packages, /opt/crio-py/venv, config, CNI network, start
#   sudo ./install.sh --no-start  everything but starting the daemon
set -euo pipefail
cd "$(dirname "$0")"
. hack/common.sh
need_root

START=1
for arg in "$@"; do
    case $arg in
        --no-start) START=0 ;;
        *) echo "usage: $0 [--no-start]" >&2; exit 2 ;;
    esac
done

PREFIX=${CRIO_PY_PREFIX:-/opt/crio-py}
apt_install "${RUNTIME_DEBS[@]}"
make_venv "$PREFIX/venv" .
ln -sf "$PREFIX/venv/bin/crio-py" /usr/local/bin/crio-py

# The built-in defaults are embedded in the package; the main file only holds local changes.
install -d -m 0755 /etc/crio-py /etc/crio-py/crio-py.d
if [ ! -e /etc/crio-py/crio-py.yaml ]; then
    cat > /etc/crio-py/crio-py.yaml <<'YAML'
# Local settings for crio-py. Every key and its default: `crio-py default-config`.
# The effective configuration: `crio-py config`.
YAML
fi
crio-py config >/dev/null   # refuse to go on with an invalid configuration

# Our CNI plugins (thin launchers in front of the plugin service the daemon runs), and a
# default network unless the machine has one: bridge cni0 on 10.85.0.0/16 with hostPorts.
"$PREFIX/venv/bin/python" -m cni_plugins.install /usr/libexec/crio-py/cni --python "$PREFIX/venv/bin/python"
install -d -m 0755 /etc/cni/net.d
if ! ls /etc/cni/net.d/*.conf /etc/cni/net.d/*.conflist /etc/cni/net.d/*.json >/dev/null 2>&1; then
    cat > /etc/cni/net.d/10-crio-py.conflist <<'JSON'
{
  "cniVersion": "1.0.0",
  "name": "crio-py",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "routes": [{"dst": "0.0.0.0/0"}],
        "ranges": [[{"subnet": "10.85.0.0/16", "gateway": "10.85.0.1"}]]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
fi

if [ "$START" = 1 ]; then
    if [ -d /run/systemd/system ]; then
        install -m 0644 contrib/crio-py.service /etc/systemd/system/crio-py.service
        systemctl daemon-reload
        systemctl enable --now crio-py.service
    elif ! crio-py status >/dev/null 2>&1; then
        install -d -m 0755 /var/log/crio-py
        nohup crio-py daemon >>/var/log/crio-py/crio-py.log 2>&1 &
        echo $! > /run/crio-py.pid
        echo "crio-py started in the background (pid $!), log: /var/log/crio-py/crio-py.log"
    fi
    for _ in $(seq 50); do
        crio-py status >/dev/null 2>&1 && break
        sleep 0.2
    done
    crio-py status
fi
