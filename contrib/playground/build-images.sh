#!/usr/bin/env bash
# Build the playground's example images from Debian packages into an OCI layout (no registry,
# no internet): "busybox" (Debian's static busybox) and "web" (busybox httpd serving a page).
# The entrypoint pushes them into the playground's local registry.
#   build-images.sh OCI-LAYOUT-DIR
set -euo pipefail
out=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download -q -o APT::Sandbox::User=root busybox-static >/dev/null
dpkg-deb -x busybox-static_*.deb deb

umoci init --layout "$out"
umoci new --image "$out:busybox"
# unpack + repack: umoci 0.4.7's `insert` writes layers without the last entry's padding (GNU tar:
# "Unexpected EOF"), which crio-py rightly refuses.
umoci unpack --image "$out:busybox" bundle >/dev/null
root=$work/bundle/rootfs
mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,root,var,run}
chmod 1777 "$root/tmp"
cp deb/bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
umoci repack --image "$out:busybox" bundle
umoci config --image "$out:busybox" --config.env PATH=/bin --config.cmd sh \
    --config.label org.opencontainers.image.description="Debian's static busybox (crio-py playground)"

umoci config --image "$out:busybox" --tag web --config.cmd httpd --config.cmd=-f --config.cmd=-v \
    --config.cmd=-p --config.cmd=80 --config.cmd=-h --config.cmd=/www --config.exposedports 80/tcp \
    --config.label org.opencontainers.image.description="busybox httpd serving /www (crio-py playground)"
rm -rf bundle
umoci unpack --image "$out:web" bundle >/dev/null
mkdir -p "$root/www"
cat > "$root/www/index.html" <<'HTML'
<!DOCTYPE html>
<html><head><title>crio-py playground</title></head>
<body><h1>Hello from a crio-py pod!</h1>
<p>Served by busybox httpd in a container that crio-py started with runc.</p></body></html>
HTML
umoci repack --image "$out:web" bundle
umoci gc --layout "$out"
umoci ls --layout "$out"
