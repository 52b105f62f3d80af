#!/usr/bin/env bash
# The playground's entrypoint: check the container is privileged, start the registry holding the
# example images and the crio-py daemon, then run the command (a login shell by default).
set -euo pipefail
LOGS=/var/log/crio-py
OCI=/var/lib/crio-py-playground/oci

refuse() {
    cat >&2 <<MSG
crio-py playground: $1
A container runtime creates namespaces, mounts, cgroups and network interfaces: run the
playground privileged, e.g.
    podman run --rm -it --privileged crio-py-playground
    docker run --rm -it --privileged crio-py-playground
MSG
    exit 1
}

probe=$(mktemp -d)
mount -t tmpfs playground-probe "$probe" 2>/dev/null || refuse "cannot mount (not --privileged?)"
umount "$probe"
rmdir "$probe"
ip link add crio-py-probe type veth peer name crio-py-probe1 2>/dev/null ||
    refuse "cannot create network interfaces (not --privileged?)"
ip link del crio-py-probe
[ -w /proc/sys/net/ipv4/ip_forward ] || refuse "/proc/sys is read-only (not --privileged?)"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    [ -w /sys/fs/cgroup ] || refuse "/sys/fs/cgroup is read-only (not --privileged?)"
else
    [ -w /sys/fs/cgroup/memory ] || refuse "/sys/fs/cgroup/memory is read-only (not --privileged?)"
fi

mkdir -p "$LOGS"
wait_for() {  # wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "crio-py playground: $what did not come up; see $LOGS" >&2
    exit 1
}

docker-registry serve /etc/crio-py-playground/registry.yml >>"$LOGS/registry.log" 2>&1 &
wait_for "the registry" 20 curl -sf http://127.0.0.1:5000/v2/
for image in busybox web; do
    repo=library/busybox
    [ "$image" = web ] && repo=playground/web
    skopeo copy -q --dest-tls-verify=false "oci:$OCI:$image" "docker://127.0.0.1:5000/$repo:latest" \
        >>"$LOGS/registry.log" 2>&1
done

crio-py daemon >>"$LOGS/crio-py.log" 2>&1 &
wait_for "crio-py" 30 crio-py status

if [ -t 0 ] && [ -t 1 ]; then
    crio-py status
    cat <<'MSG'

Welcome to the crio-py playground. The daemon and a registry with the example images run here.
Examples: /examples (README.md: a busybox pod, a web server, two containers sharing localhost).
Try:  crio-py-playground-demo     (a pod, a web server, curl of the pod IP, exec ip addr)
      crio-py pods / ps -a / images / logs -f ID / exec ID CMD / inspect ID
MSG
    command -v crictl >/dev/null && echo "      crictl (configured in /etc/crictl.yaml) takes the same files"
    echo
fi
exec "$@"
