#!/usr/bin/env bash
# Conclave vs llama.cpp, alternating: llama-bench, conclave, llama-bench,
# conclave … (PAIRS pairs, at least 3) on the same GGUF files with the same
# threads, then each ratio's median. Alternation spreads the shared machine's
# noise over both engines; never run both at once (2 cores).
#   bench/peer/run.sh [MODEL.gguf ...]        (default: var/bench.gguf)
# Environment: THREADS (default nproc), PROMPTS (256,512), GEN (128),
# PAIRS (3), GO (go).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
threads="${THREADS:-$(nproc 2>/dev/null || echo 2)}"
prompts="${PROMPTS:-256,512}"
gen="${GEN:-128}"
pairs="${PAIRS:-3}"
GO="${GO:-go}"
[ "$pairs" -ge 3 ] || { echo "peer: PAIRS must be at least 3" >&2; exit 2; }
[ $# -gt 0 ] || set -- "$root/var/bench.gguf"

(cd "$root" && "$GO" build -o bin/conclave ./cmd/conclave)
llama_bench="$("$root/bench/llamacpp/build.sh")"
out="$root/var/bench-results/peer"
mkdir -p "$out"

for model in "$@"; do
    if [ ! -f "$model" ]; then
        echo "peer: $model not found (make bench-peer synthesizes the bench presets)" >&2
        exit 2
    fi
    name="$(basename "$model" .gguf)"
    ours=() theirs=()
    for i in $(seq 1 "$pairs"); do
        echo "peer: $name pair $i/$pairs: llama-bench" >&2
        "$llama_bench" -m "$model" -t "$threads" -p "$prompts" -n "$gen" -r 1 -o json >"$out/$name-$i-llamacpp.json"
        echo "peer: $name pair $i/$pairs: conclave" >&2
        "$root/bin/conclave" bench model --model "$model" --threads "$threads" --prompt-tokens "$prompts" \
            --gen-tokens "$gen" --reps 1 --no-membw --json >"$out/$name-$i-conclave.json"
        theirs+=("$out/$name-$i-llamacpp.json")
        ours+=("$out/$name-$i-conclave.json")
    done
    echo
    echo "== $name ($threads threads, $pairs alternating pairs) =="
    "$root/bin/conclave" bench compare --ours "$(IFS=,; echo "${ours[*]}")" --llamacpp "$(IFS=,; echo "${theirs[*]}")"
done
echo
"$root/bin/conclave" bench membw --threads "$threads"
