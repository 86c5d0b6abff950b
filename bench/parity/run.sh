#!/usr/bin/env bash
# llama.cpp parity check (what `make parity` runs).
#   bench/parity/run.sh [compare.mjs flags, e.g. --cases tiny-f32 --verbose]
# 1. installs node deps (prebuilt llama.cpp CPU binary only; no downloads, no builds),
# 2. builds bin/conclave, 3. synthesizes the case models into var/parity/,
# 4. compares conclave against llama.cpp (exit status 1 on any FAIL, 2 on harness errors).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
GO="${GO:-go}"

# node-llama-cpp must never download or compile llama.cpp here: only the prebuilt
# @node-llama-cpp/linux-x64 package is used (see README.md).
export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
export NODE_LLAMA_CPP_GPU=false

if ! command -v node >/dev/null 2>&1; then
    echo "parity: node (>= 20) is required" >&2
    exit 2
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "parity: only linux-x64 is wired up (package.json pins @node-llama-cpp/linux-x64)" >&2
    exit 2
fi

if [ ! -f "$here/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node" ] \
    || [ ! -d "$here/node_modules/node-llama-cpp" ] \
    || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
    echo "parity: installing node deps (npm ci)" >&2
    # --omit=optional drops node-llama-cpp's GPU/other-platform binaries (~700 MB);
    # the CPU binary is a direct dependency. .npmrc also sets ignore-scripts=true.
    (cd "$here" && npm ci --no-audit --no-fund --omit=optional --ignore-scripts)
fi

echo "parity: building bin/conclave" >&2
(cd "$root" && "$GO" build -o bin/conclave ./cmd/conclave)

mkdir -p "$root/var/parity"
# --synth: always rewrite the case models (deterministic, takes well under a second).
cd "$here"
exec node compare.mjs --bin "$root/bin/conclave" --dir "$root/var/parity" --synth "$@"
