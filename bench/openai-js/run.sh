#!/usr/bin/env bash
# The official openai npm client against `conclave serve` (what
# `make openai-js` runs): installs the pinned client (npm ci), builds
# bin/conclave, serves the demo model on a free loopback port with a fresh
# data dir, runs client.mjs against it and stops the server. Exit status 1
# on any failed check, 2 when the harness cannot run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
GO="${GO:-go}"

if ! command -v node >/dev/null 2>&1; then
    echo "openai-js: node (>= 20) is required" >&2
    exit 2
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "openai-js: node $(node --version) is too old (the openai client needs 20 or later)" >&2
    exit 2
fi
if [ ! -d "$here/node_modules/openai" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
    echo "openai-js: installing the openai client (npm ci)" >&2
    (cd "$here" && npm ci --no-audit --no-fund --ignore-scripts) || exit 2
fi
echo "openai-js: building bin/conclave" >&2
(cd "$root" && "$GO" build -o bin/conclave ./cmd/conclave) || exit 2

# Four loopback ports the kernel has just handed out (HTTP, gossip, Raft,
# actors), held together so they differ; another process may still take one
# before the server binds it, so a start that finds one taken is retried.
free_ports() {
    node -e 'const net=require("net"),ss=[];(function next(){const s=net.createServer().listen(0,"127.0.0.1",()=>{ss.push(s);if(ss.length<4)next();else{console.log(ss.map(x=>x.address().port).join(" "));ss.forEach(x=>x.close())}})})()'
}
data="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$data"
}
trap cleanup EXIT
ready=0
for attempt in 1 2 3 4 5; do
    read -r port gport rport aport <<<"$(free_ports)"
    rm -rf "$data/node"
    (cd "$root" && exec bin/conclave serve --http-addr "127.0.0.1:$port" --gossip-addr "127.0.0.1:$gport" \
        --raft-addr "127.0.0.1:$rport" --actor-addr "127.0.0.1:$aport" \
        --data-dir "$data/node" --log-level warn) >"$data/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 240); do
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        if node -e "fetch('http://127.0.0.1:$port/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"; then ready=1; break; fi
        sleep 0.5
    done
    [ "$ready" = 1 ] && break
    if ! kill -0 "$pid" 2>/dev/null && grep -q "address already in use" "$data/log"; then
        echo "openai-js: a port was taken before the server bound it (attempt $attempt); trying others" >&2
        wait "$pid" 2>/dev/null || true
        pid=""
        continue
    fi
    break
done
if [ "$ready" != 1 ]; then
    cat "$data/log" >&2
    echo "openai-js: the server did not become ready" >&2
    exit 2
fi
if ! node "$here/client.mjs" "http://127.0.0.1:$port"; then
    echo "openai-js: server log:" >&2
    cat "$data/log" >&2
    exit 1
fi
