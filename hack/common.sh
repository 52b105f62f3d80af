# Shared by install.sh and run-tests.sh: Debian packages and a Python virtual environment.
# shellcheck shell=bash

# What the daemon needs at run time.
RUNTIME_DEBS=(runc conmon containernetworking-plugins catatonit iptables iproute2 util-linux
              ca-certificates python3 python3-venv python3-dev)
# What the test suite adds: a real registry and image tools, busybox to build test images.
# containerd: bench/compare.py measures against it (its --quick form runs with the tests).
TEST_DEBS=(docker-registry skopeo umoci apache2-utils procps containerd)
# What the playground image adds (Dockerfile.playground): its registry and image tools, things to
# look around with. Its tests (tests/e2e/playground.sh) need podman and debootstrap on the host.
PLAYGROUND_DEBS=(docker-registry skopeo umoci curl jq procps iputils-ping less)
PLAYGROUND_TEST_DEBS=(podman debootstrap)

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$0: run as root (it installs packages and manages namespaces, cgroups and mounts)" >&2
        exit 1
    fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# make_venv DIR PIP-ARGS...: create DIR (if needed) with the interpreter on PATH, then pip install.
make_venv() {
    local dir=$1; shift
    if [ ! -x "$dir/bin/python" ]; then
        python3 -m venv "$dir"
    fi
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
}
