// Package kernels owns the numeric core of Conclave's CPU path: tensor element
// types (DType, numbered as GGML numbers them), the byte layouts of the GGML
// block-quantized formats, their reference quantizers and dequantizers, dot
// products in GGML's "vec dot" style, a persistent worker Pool, and a
// row-parallel, batch-invariant MatMul over GGUF weight matrices. It also holds
// the small element-wise operations the model needs (RMSNorm, Softmax, SwiGLU…).
//
// # Numerics
//
// Layouts and arithmetic follow ggml's portable (non-SIMD) reference code so a
// tensor quantized here is byte-identical to one quantized by llama.cpp's
// reference quantizers (Q8_0, Q4_0 and Q8_K bit for bit; Q4_K and Q6_K follow
// quantize_row_q4_K_ref and quantize_row_q6_K_ref), and dot products reduce in
// the same order as ggml's generic kernels: integer sums per block, scaled in
// float32, BF16 accumulated in float64. F32 and F16 weights (against F32
// activations) and the attention kernels use one defined float32 order
// instead, 16 lanes folded by a fixed tree (see DotF32), which the SIMD
// kernels and the pure-Go code both perform. Products that feed a sum are
// rounded explicitly (float32(a*b)) so the Go compiler never fuses them into an
// FMA; results are therefore the same on amd64 and arm64.
//
// Determinism: MatMul splits work over output rows only, never over the
// reduction dimension, so every output element is bit-identical for any thread
// count and whether its activation row is alone or inside a batch.
//
// # SIMD
//
// On amd64 (unless built with the purego tag) MatMul runs Q8_0 and Q4_0
// weights through assembly kernels generated with avo (matmul_amd64.s, from
// internal/asmgen, a separate module; run go generate to rebuild): an AVX2 row
// kernel (8 weight rows × 1 activation row) and, with AVX-512 VNNI, a row
// kernel of 16 weight rows × 1 packed activation row (VPDPBUSD on offset
// weights, the offset's activation sum subtracted exactly; decode), its
// multi-row twins (16 weight rows × 2–16 activation rows per pass over the
// weights, which transpose each weight block once; batched decode and
// prefill, large batches in chunks of activation rows). The level is chosen
// at run time with golang.org/x/sys/cpu (AVX2 with F16C and FMA at least).
// Each lane is one output element and performs exactly the Go dot's integer
// block sums and float32 operations in the same order, the per-block
// multiply-add fused as in ggml's x86 builds (fma32 in Go), so results are
// bit-identical across levels (see matmul_simd.go).
//
// The same generator emits AVX2 float kernels used on every SIMD level:
// DotF32, AxpyF32, F16ToF32Row, the grouped-query attention kernels
// (AttnScoresF16/F32, AttnAccumF16/F32: all query heads of a GQA group
// against one key or value row per pass), F16 and F32 weight MatMul (4
// weight rows per pass, matmul_float.go; with AVX-512 one ZMM per output
// holds the 16 lanes of the defined order: 8 weight rows × 1 activation row
// for decode, 4 weight rows × up to 6 activation rows, each weight vector
// converted once, for batches), and the Q8_0 activation quantizer
// (exact round half away from zero). Each has a pure-Go twin (purego builds,
// other architectures, and tests at every level) that performs the same
// float32 operations in the same order, so results are bit-identical.
//
// # Imports
//
// kernels imports nothing from this project; only the standard library,
// golang.org/x/sys/cpu (for SIMD dispatch) and golang.org/x/sys/unix (to
// offer the memory AllocHuge returns, packed tiles and KV caches, to
// transparent huge pages on Linux). Every other
// package may import it.
package kernels
