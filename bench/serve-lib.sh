# Shared by bench/serve-ratio.sh and bench/serve-peer.sh (sourced, not run):
# one server process at a time, stopped by cleanup, and the columns of
# `conclave bench serve --md` tables.

pid="" data=""
# cleanup stops the server started last (pid) and removes its data dir.
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [ -n "$data" ]; then rm -rf "$data"; fi
    pid="" data=""
}
trap cleanup EXIT

# level FILE LEVEL COLUMN: a column of the Markdown table row "| c=LEVEL | …"
# (3 output tok/s, 5 TTFT p50, 8 TPOT p50, 14 errors).
level() { awk -F'|' -v l="c=$2" -v c="$3" '{ gsub(/ /, "", $2) } $2 == l { gsub(/ /, "", $(c+1)); print $(c+1) }' "$1"; }

# median: the median of the numbers on stdin, two decimals.
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
