#!/usr/bin/env bash
# Conclave vs llama.cpp CPU speed on one GGUF file, same threads, one after
# the other (never both at once: they would share the cores).
#   bench/compare.sh [MODEL.gguf]
# Environment: THREADS (default nproc), PROMPTS (256,512), GEN (128),
# REPS (2; llama-bench's default is 5), GO (go).
# Builds bin/conclave and, when missing, llama-bench (bench/llamacpp/build.sh,
# ~6 min). Results are kept in var/bench-results/NAME-{conclave,llamacpp}.json.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
model="${1:-$root/var/bench.gguf}"
threads="${THREADS:-$(nproc 2>/dev/null || echo 2)}"
prompts="${PROMPTS:-256,512}"
gen="${GEN:-128}"
reps="${REPS:-2}"
GO="${GO:-go}"

if [ ! -f "$model" ]; then
    echo "compare: $model not found (make bench synthesizes var/bench.gguf)" >&2
    exit 2
fi
(cd "$root" && "$GO" build -o bin/conclave ./cmd/conclave)
llama_bench="$("$root/bench/llamacpp/build.sh")"

out="$root/var/bench-results"
mkdir -p "$out"
name="$(basename "$model" .gguf)"
theirs="$out/$name-llamacpp.json"
ours="$out/$name-conclave.json"

echo "compare: llama-bench on $model ($threads threads, pp $prompts, tg $gen, $reps reps)" >&2
"$llama_bench" -m "$model" -t "$threads" -p "$prompts" -n "$gen" -r "$reps" -o json >"$theirs"
echo "compare: conclave bench model on $model" >&2
"$root/bin/conclave" bench model --model "$model" --threads "$threads" --prompt "$prompts" --gen "$gen" \
    --reps "$reps" --json >"$ours"
"$root/bin/conclave" bench compare --ours "$ours" --llamacpp "$theirs"
