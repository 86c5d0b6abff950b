#!/usr/bin/env bash
# Builds llama.cpp's llama-bench (or llama-server) from the source
# node-llama-cpp ships, as the CPU speed baseline for `make bench`,
# bench/compare.sh and bench/serve-peer.sh.
#   bench/llamacpp/build.sh [llama-bench|llama-server]   # idempotent: exits at once when built
# The npm package (installed by bench/parity/run.sh) carries llama.cpp as a git
# bundle plus patches; we clone it into var/llama.cpp (git-ignored) and build
# only the target asked for, for this CPU's instruction sets (no AMX, see
# below), without curl. ~10 min on 2 cores. Prints the binary's path on stdout.
# The built binary is smoke-tested; a binary that does not run is rebuilt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="$root/var/llama.cpp"
target="${1:-llama-bench}"
case "$target" in
llama-bench) server=OFF ;;
llama-server) server=ON ;;
*) echo "llamacpp: unknown target $target (llama-bench or llama-server)" >&2; exit 2 ;;
esac
bin="$src/build/bin/$target"
jobs="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

if [ -x "$bin" ] && "$bin" --help >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi

pkg="$root/bench/parity/node_modules/node-llama-cpp/llama"
if [ ! -f "$pkg/gitRelease.bundle" ]; then
    echo "llamacpp: installing node-llama-cpp (npm ci in bench/parity)" >&2
    export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true NODE_LLAMA_CPP_GPU=false
    (cd "$root/bench/parity" && npm ci --no-audit --no-fund --omit=optional --ignore-scripts) >&2
fi
if ! command -v cmake >/dev/null 2>&1; then
    echo "llamacpp: cmake is required (Debian: apt-get install -y cmake)" >&2
    exit 2
fi

if [ ! -d "$src/.git" ]; then
    echo "llamacpp: cloning $(cat "$pkg/llama.cpp.info.json" | tr -d '\n ') from the bundle" >&2
    rm -rf "$src"
    git clone --quiet "$pkg/gitRelease.bundle" "$src" >&2
    for p in "$pkg"/patches/*.diff; do
        [ -f "$p" ] || continue
        # The patches touch model loading from memory, not the CPU kernels; a
        # patch that no longer applies is reported, not fatal.
        git -C "$src" apply "$p" >&2 || echo "llamacpp: patch $(basename "$p") did not apply; continuing" >&2
    done
fi

# Instruction sets: what /proc/cpuinfo lists, named explicitly instead of
# GGML_NATIVE=ON, because -march=native also turns on AMX where the CPU
# advertises it, and on VMs that do not enable the AMX tile state (this
# project's dev machines) llama-bench then dies with SIGILL on tileloadd.
# LLAMACPP_ISA overrides the choice (e.g. "-DGGML_NATIVE=ON").
isa="${LLAMACPP_ISA:-}"
if [ -z "$isa" ]; then
    flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    isa="-DGGML_NATIVE=OFF"
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
        avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
        if [[ "$flags" == *" ${pair%%:*} "* ]]; then
            isa="$isa -DGGML_${pair##*:}=ON"
        else
            isa="$isa -DGGML_${pair##*:}=OFF"
        fi
    done
    isa="$isa -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi

echo "llamacpp: building $target with $jobs jobs ($isa)" >&2
# shellcheck disable=SC2086 # $isa is a list of flags
cmake -S "$src" -B "$src/build" $isa -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER="$server" >&2
cmake --build "$src/build" --target "$target" -j"$jobs" >&2
echo "$bin"
