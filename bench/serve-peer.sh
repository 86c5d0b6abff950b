#!/usr/bin/env bash
# The serving goal's command against llama.cpp's own server and ours,
# alternating: llama-server, conclave serve, llama-server, … (RUNS each), a
# fresh server per run, on the same GGUF file and threads. Each run is
# `conclave bench serve` at 1 and 16 concurrent streams (16 requests, 32
# prompt words, 64 tokens, EOS ignored), so both servers answer exactly the
# same load through the same client. Prints every run and the medians:
# each server's 16-stream/1-stream ratio, and ours over llama.cpp's at each
# level. Never run anything else meanwhile: the servers have 2 cores.
#   bench/serve-peer.sh [MODEL.gguf]        (default: var/bench.gguf)
# Environment: RUNS (3), THREADS (2), PORT (18600), GO (go). Builds
# llama-server on first use (bench/llamacpp/build.sh, ~10 min).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${RUNS:-3}"
threads="${THREADS:-2}"
port="${PORT:-18600}"
GO="${GO:-go}"
model="${1:-$root/var/bench.gguf}"
(cd "$root" && "$GO" build -o bin/conclave ./cmd/conclave)
[ -f "$model" ] || "$root/bin/conclave" model synth --preset bench --out "$model"
server="$("$root/bench/llamacpp/build.sh" llama-server)"
out="$root/var/bench-results/serve-peer/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "serve-peer: results in $out" >&2

# shellcheck source=serve-lib.sh
. "$root/bench/serve-lib.sh"
# ready PATH: wait until the server answers PATH (llama-server: /health,
# which is 503 while it loads; ours: /ready), and is still the one started.
ready() {
    local i
    for i in $(seq 1 240); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -sf "http://127.0.0.1:$port$1" >/dev/null 2>&1; then
            kill -0 "$pid" 2>/dev/null
            return
        fi
        sleep 0.5
    done
    return 1
}
# whose: the server answering on the port (llama-server has /props).
whose() {
    if curl -sf "http://127.0.0.1:$port/props" >/dev/null 2>&1; then echo llamacpp; else echo conclave; fi
}

declare -A one sixteen
for i in $(seq 1 "$runs"); do
    for name in llamacpp conclave; do
        if curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
            echo "serve-peer: something already answers on port $port" >&2
            exit 1
        fi
        data="$(mktemp -d)"
        if [ "$name" = llamacpp ]; then
            # 16 slots sharing a 4096-position cache: 256 per stream.
            "$server" -m "$model" -t "$threads" -np 16 -c 4096 --host 127.0.0.1 --port "$port" --no-webui \
                >"$data/log" 2>&1 &
            pid=$!
            path=/health
        else
            "$root/bin/conclave" serve --model "$model" --http-addr "127.0.0.1:$port" --port-base $((port + 1000)) \
                --data-dir "$data/node" --threads "$threads" --log-level error >"$data/log" 2>&1 &
            pid=$!
            path=/ready
        fi
        if ! ready "$path" || [ "$(whose)" != "$name" ]; then
            cat "$data/log" >&2
            echo "serve-peer: $name did not become ready" >&2
            exit 1
        fi
        md="$out/$name-$i.md"
        "$root/bin/conclave" bench serve --url "http://127.0.0.1:$port" --endpoint completions --concurrency 1,16 \
            --requests 16 --prompt-tokens 32 --max-tokens 64 --ignore-eos --warmup 2 --md "$md" >/dev/null
        cleanup
        # A run in which a request failed does not count: both servers must
        # have answered the same load.
        for l in 1 16; do
            if [ "$(level "$md" "$l" 14 | cut -d'(' -f1)" != 0 ]; then
                echo "serve-peer: $name run $i lost requests at $l streams ($(level "$md" "$l" 14)); see $md" >&2
                exit 1
            fi
        done
        o1="$(level "$md" 1 3)" o16="$(level "$md" 16 3)"
        one[$name]="${one[$name]:-} $o1"
        sixteen[$name]="${sixteen[$name]:-} $o16"
        printf '%s run %d: %s / %s tok/s (1 / 16 streams), ratio %s, TPOT p50 %s / %s ms, TTFT p50 %s / %s ms\n' \
            "$name" "$i" "$o1" "$o16" "$(awk -v a="$o1" -v b="$o16" 'BEGIN { printf "%.2f", b / a }')" \
            "$(level "$md" 1 8)" "$(level "$md" 16 8)" "$(level "$md" 1 5)" "$(level "$md" 16 5)"
    done
done
for name in llamacpp conclave; do
    # shellcheck disable=SC2086
    printf '%s median: 1 stream %s tok/s, 16 streams %s tok/s\n' "$name" \
        "$(printf '%s\n' ${one[$name]} | median)" "$(printf '%s\n' ${sixteen[$name]} | median)"
done
# Per-run ratios, then their medians (each pair ran back to back).
# shellcheck disable=SC2206
l1=(${one[llamacpp]}) l16=(${sixteen[llamacpp]}) c1=(${one[conclave]}) c16=(${sixteen[conclave]})
for k in $(seq 0 $((runs - 1))); do
    echo "${l16[k]} ${l1[k]} ${c16[k]} ${c1[k]}"
done | awk '{ print $1 / $2, $3 / $4, $4 / $2, $3 / $1 }' >"$out/ratios.txt"
printf 'median ratio 16/1 streams: llama.cpp %s, conclave %s; conclave / llama.cpp: 1 stream %s, 16 streams %s\n' \
    "$(cut -d' ' -f1 "$out/ratios.txt" | median)" "$(cut -d' ' -f2 "$out/ratios.txt" | median)" \
    "$(cut -d' ' -f3 "$out/ratios.txt" | median)" "$(cut -d' ' -f4 "$out/ratios.txt" | median)"
