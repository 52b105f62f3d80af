#!/usr/bin/env bash
# Build the playground image (Dockerfile.playground) from a locally made Debian base, run it
# privileged and run the demo inside: a pod, a web server, curl of the pod's IP, `ip addr` in the
# container. No internet: the base comes from debootstrap, Debian packages from the machine's
# mirror, Python packages as wheels made here from the machine's pip configuration.
#   tests/e2e/playground.sh        (as root; exit 77 with the reason when podman cannot do it)
# Cached between runs: the base image (localhost/crio-py-playground-base:bookworm), the wheels
# (/var/cache/crio-py-playground) and podman's build layers (apt packages, example images); only
# the crio-py layer is rebuilt.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BASE_IMAGE=localhost/crio-py-playground-base:bookworm
IMAGE=localhost/crio-py-playground:latest
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
NAME=crio-py-playground-test-$$

skip() { echo "SKIP: $*"; exit 77; }
step() { echo "== $* ($(date +%T))"; }

[ "$(id -u)" = 0 ] || skip "not root"
command -v podman >/dev/null || skip "podman is not installed"
command -v debootstrap >/dev/null || skip "debootstrap is not installed"

work=$(mktemp -d /var/tmp/crio-py-playground.XXXXXX)
cleanup() {
    "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

if ! podman image exists "$BASE_IMAGE"; then
    step "base image: debootstrap bookworm from $MIRROR"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log"; skip "debootstrap could not reach $MIRROR"; }
    tar -C "$work/rootfs" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
    rm -rf "$work/rootfs"
fi
"${PODMAN[@]}" run --rm --privileged "${LIMITS[@]}" --network none "$BASE_IMAGE" true 2>"$work/probe.log" ||
    skip "podman cannot run a privileged container here: $(tail -1 "$work/probe.log")"

step "build context and wheels"
mkdir "$work/ctx"
git -C "$REPO" ls-files -co --exclude-standard -z | (cd "$REPO" && tar --null -T - -c) | tar -x -C "$work/ctx"
# The dependencies' wheels (and the build backend's) are kept per pyproject.toml; crio-py itself
# is built from the source in the image, as install.sh does.
wheels=/var/cache/crio-py-playground/wheels-$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)
if [ ! -d "$wheels" ]; then
    { "$PYTHON" -m pip wheel -q --wheel-dir "$work/wheels" "$REPO" &&
      "$PYTHON" -m pip download -q --dest "$work/wheels" setuptools wheel; } >"$work/pip.log" 2>&1 ||
        { cat "$work/pip.log"; exit 1; }
    rm -f "$work"/wheels/crio_py-*.whl
    rm -rf "$(dirname "$wheels")"/wheels-*   # those of an older pyproject.toml
    mkdir -p "$(dirname "$wheels")"
    mv "$work/wheels" "$wheels"
fi
cp -r "$wheels" "$work/ctx/.playground-wheels"

step "podman build"
"${PODMAN[@]}" build -q --network host "${LIMITS[@]}" -f Dockerfile.playground \
    --build-arg BASE="$BASE_IMAGE" -t "$IMAGE" "$work/ctx" >"$work/build.log" 2>&1 ||
    { tail -40 "$work/build.log"; exit 1; }
podman image prune -f --filter label=io.crio-py.playground=1 >/dev/null

step "unprivileged: a clear refusal"
if out=$("${PODMAN[@]}" run --rm "${LIMITS[@]}" --name "$NAME" "$IMAGE" true 2>&1); then
    echo "the playground ran unprivileged:"; echo "$out"; exit 1
fi
echo "$out" | grep -q -- "--privileged" || { echo "no clear refusal: $out"; exit 1; }

step "privileged: the demo"
# On cgroup v1 the playground's pods live in the host's hierarchy (under crio-py/): a demo that
# fails half-way leaves their cgroups, empty once the container is gone. Those are removed.
pod_cgroups() { find /sys/fs/cgroup/*/crio-py -maxdepth 1 -type d -name 'crio-py-*' 2>/dev/null | sort; }
pod_cgroups >"$work/cgroups.before"
if ! timeout 300 "${PODMAN[@]}" run --rm --privileged "${LIMITS[@]}" --name "$NAME" "$IMAGE" \
        crio-py-playground-demo >"$work/demo.log" 2>&1; then
    cat "$work/demo.log"
    "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    pod_cgroups | comm -13 "$work/cgroups.before" - | xargs -r rmdir 2>/dev/null || true
    exit 1
fi
cat "$work/demo.log"
ip=$(sed -n '/^\$ IP=/{n;p}' "$work/demo.log")
[[ $ip =~ ^10\.85\.[0-9]+\.[0-9]+$ ]] || { echo "no pod IP in the demo"; exit 1; }
grep -q "<h1>Hello from a crio-py pod!</h1>" "$work/demo.log" || { echo "curl did not get the page"; exit 1; }
grep -q "inet $ip/16 .* eth0" "$work/demo.log" || { echo "ip addr did not show eth0 with $ip"; exit 1; }
echo "playground demo passed: pod IP $ip served the page, eth0 has it"
