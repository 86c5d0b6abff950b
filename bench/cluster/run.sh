#!/usr/bin/env bash
# One node against three, as real processes on loopback, alternating: a
# 1-node cluster, a 3-node cluster, a 1-node cluster … (PAIRS pairs). Each
# cluster serves MODEL with replication 1 (every expert lives on exactly one
# node) and takes CONCURRENCY concurrent streaming completions at its first
# node, so every batch step sends about two thirds of its expert rows to the
# other nodes. Prints each run's output tokens/s (conclave bench serve) and
# the median of the per-pair ratios three/one.
#   bench/cluster/run.sh [MODEL.gguf]        (default: var/bench.gguf)
# Environment: THREADS per node (2), CONCURRENCY (16), REQUESTS (32),
# PROMPT (32), TOKENS (64), PAIRS (4), PORT (19000), GO (go); BIN, a
# conclave binary to measure instead of building this tree's.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
model="${1:-$root/var/bench.gguf}"
threads="${THREADS:-2}"
conc="${CONCURRENCY:-16}"
requests="${REQUESTS:-32}"
prompt="${PROMPT:-32}"
tokens="${TOKENS:-64}"
pairs="${PAIRS:-4}"
port="${PORT:-19000}"
GO="${GO:-go}"
[ -f "$model" ] || { echo "cluster: $model not found (conclave model synth --preset bench --out $model)" >&2; exit 2; }

bin="${BIN:-}"
if [ -z "$bin" ]; then
    (cd "$root" && "$GO" build -o bin/conclave ./cmd/conclave)
    bin="$root/bin/conclave"
fi
out="$root/var/bench-results/cluster"
mkdir -p "$out"
key=000102030405060708090a0b0c0d0e0f

pids=()
stop() {
    [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null && wait "${pids[@]}" 2>/dev/null
    pids=()
}
trap stop EXIT

# run N LABEL: start an N-node cluster, wait until every node is ready,
# bench it, stop it; prints output tokens/s.
run() {
    local n=$1 label=$2 dir
    dir="$(mktemp -d)"
    for i in $(seq 0 $((n - 1))); do
        local args=(node --id "n$i" --data-dir "$dir/n$i" --port-base $((port + 10 * i)) --cluster-key "$key"
            --log-level error --model "$model" --replication 1 --threads "$threads" --capacity 64GiB)
        [ "$i" -gt 0 ] && args+=(--join "127.0.0.1:$((port + 1))")
        "$bin" "${args[@]}" >"$dir/n$i.log" 2>&1 &
        pids+=($!)
        if [ "$i" -eq 0 ]; then
            for _ in $(seq 300); do curl -sf "localhost:$port/health" >/dev/null && break; sleep 0.2; done
        fi
    done
    local ok=0
    for _ in $(seq 600); do
        ok=1
        for i in $(seq 0 $((n - 1))); do
            curl -sf "localhost:$((port + 10 * i))/ready" >/dev/null || ok=0
        done
        [ $ok = 1 ] && break
        sleep 0.5
    done
    if [ $ok != 1 ]; then
        echo "cluster: $n nodes never became ready" >&2
        tail -n 5 "$dir"/n*.log >&2
        exit 1
    fi
    "$bin" bench serve --url "http://127.0.0.1:$port" --endpoint completions --concurrency "$conc" \
        --requests "$requests" --prompt-tokens "$prompt" --max-tokens "$tokens" --ignore-eos \
        --out "$out/$label.json" >/dev/null 2>"$dir/bench.log" || { cat "$dir/bench.log" >&2; exit 1; }
    stop
    rm -rf "$dir"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["levels"][0]["output_tokens_per_s"])' "$out/$label.json"
}

ratios=()
for p in $(seq 1 "$pairs"); do
    one=$(run 1 "pair$p-1node")
    three=$(run 3 "pair$p-3nodes")
    r=$(python3 -c "print(round($three / $one, 3))")
    echo "pair $p: 1 node $one tok/s, 3 nodes $three tok/s, ratio $r"
    ratios+=("$r")
done
python3 -c 'import statistics,sys; print("median ratio three/one:", statistics.median(map(float, sys.argv[1:])))' "${ratios[@]}"
