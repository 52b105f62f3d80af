#!/usr/bin/env bash
# The playground's demo: a pod, a web server container in it, curl of the pod's IP, `ip addr`
# inside the container; every command shown as it runs. Everything it makes is removed at the end.
set -euo pipefail
EX=/examples/web

show() { echo "\$ $*"; }

POD=""
cleanup() {
    if [ -n "$POD" ]; then
        crio-py stopp "$POD" >/dev/null && crio-py rmp "$POD" >/dev/null
    fi
}
trap cleanup EXIT

show crio-py pull playground/web
crio-py pull playground/web
show "POD=\$(crio-py runp $EX/sandbox.yml)"
POD=$(crio-py runp $EX/sandbox.yml)
show "CTR=\$(crio-py create \$POD $EX/container.yml $EX/sandbox.yml)"
CTR=$(crio-py create "$POD" $EX/container.yml $EX/sandbox.yml)
show "crio-py start \$CTR"
crio-py start "$CTR" >/dev/null
show crio-py pods
crio-py pods
show crio-py ps
crio-py ps
show "IP=\$(crio-py inspectp \$POD | jq -r .status.network.ip); echo \$IP"
IP=$(crio-py inspectp "$POD" | jq -r .status.network.ip)
echo "$IP"
# httpd was just started: the first answer may take a moment.
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://$IP/" && break
    sleep 0.1
done
show "curl http://\$IP/"
curl -s "http://$IP/"
show "crio-py exec \$CTR ip addr show eth0"
crio-py exec "$CTR" ip addr show eth0
show "crio-py logs \$CTR"
crio-py logs "$CTR"
show runc --root /run/crio-py/runc list -q
runc --root /run/crio-py/runc list -q
show "crio-py stopp \$POD && crio-py rmp \$POD"
crio-py stopp "$POD" >/dev/null
crio-py rmp "$POD" >/dev/null
POD=""
show crio-py pods
crio-py pods
