#!/usr/bin/env bash
# The serving goal's check, repeated: each run starts a fresh `conclave serve`
# on the bench preset and runs `conclave bench serve` at 1 and 16 streams
# (the command docs/performance.md reports), then stops the server. With two
# binaries the runs alternate A B A B, so the shared machine's noise falls on
# both. Prints every run (output tok/s at 1 and 16 streams, their ratio, the
# TPOT ratio 16·TPOT₁/TPOT₁₆, TTFT p50 at both levels) and each binary's
# median ratio. Never run anything else meanwhile: the server has 2 cores.
#   bench/serve-ratio.sh [BIN_A [BIN_B]]     (default: bin/conclave, built)
# Environment: RUNS (5, per binary), MODEL (var/bench.gguf, synthesized if
# missing), THREADS (2), PORT (18480), GO (go).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${RUNS:-5}"
model="${MODEL:-$root/var/bench.gguf}"
threads="${THREADS:-2}"
port="${PORT:-18480}"
GO="${GO:-go}"
if [ $# -eq 0 ]; then
    (cd "$root" && "$GO" build -o bin/conclave ./cmd/conclave)
    set -- "$root/bin/conclave"
fi
out="$root/var/bench-results/serve-ratio"
mkdir -p "$(dirname "$model")" "$out"
[ -f "$model" ] || "$1" model synth --preset bench --out "$model"
if curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then
    echo "serve-ratio: something already answers on port $port" >&2
    exit 1
fi
# shellcheck source=serve-lib.sh
. "$root/bench/serve-lib.sh"

# Runs are named by the binary's position (A, B, …), so two builds with the
# same file name stay apart.
letters=(A B C D E F G H)
[ $# -le ${#letters[@]} ] || { echo "serve-ratio: at most ${#letters[@]} binaries" >&2; exit 2; }
declare -A ratios
for i in $(seq 1 "$runs"); do
    for pos in $(seq 1 $#); do
        bin="${!pos}"
        name="${letters[pos - 1]}"
        data="$(mktemp -d)"
        "$bin" serve --model "$model" --http-addr "127.0.0.1:$port" --port-base $((port + 1000)) \
            --data-dir "$data" --threads "$threads" --log-level error >"$data/log" 2>&1 &
        pid=$!
        ready=0
        for _ in $(seq 1 240); do
            kill -0 "$pid" 2>/dev/null || break
            if curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then ready=1; break; fi
            sleep 0.5
        done
        if [ "$ready" != 1 ] || ! kill -0 "$pid" 2>/dev/null; then
            cat "$data/log" >&2
            echo "serve-ratio: $bin did not become ready" >&2
            exit 1
        fi
        md="$out/$name-$i.md"
        "$bin" bench serve --url "http://127.0.0.1:$port" --endpoint completions --concurrency 1,16 \
            --requests 16 --prompt-tokens 32 --max-tokens 64 --ignore-eos --warmup 2 --md "$md" >/dev/null
        cleanup
        o1="$(level "$md" 1 3)" o16="$(level "$md" 16 3)"
        t1="$(level "$md" 1 8)" t16="$(level "$md" 16 8)"
        f1="$(level "$md" 1 5)" f16="$(level "$md" 16 5)"
        r="$(awk -v a="$o1" -v b="$o16" 'BEGIN { printf "%.2f", b / a }')"
        d="$(awk -v a="$t1" -v b="$t16" 'BEGIN { printf "%.2f", 16 * a / b }')"
        printf '%s run %d: %s / %s tok/s  ratio %s  TPOT ratio %s  TTFT p50 %s / %s ms  (%s)\n' \
            "$name" "$i" "$o1" "$o16" "$r" "$d" "$f1" "$f16" "$bin"
        ratios[$name]="${ratios[$name]:-} $r"
    done
done
for pos in $(seq 1 $#); do
    name="${letters[pos - 1]}"
    # shellcheck disable=SC2086
    printf '%s median ratio %s over %d runs (%s)\n' "$name" "$(printf '%s\n' ${ratios[$name]} | median)" \
        "$(printf '%s\n' ${ratios[$name]} | wc -l)" "${!pos}"
done
