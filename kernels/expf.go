package kernels

import "math"

// expf is the float32 exponential the element-wise kernels use (SiLU,
// softmax): Cephes' expf with the argument clamped to [expfMin, expfMax],
// n = round-to-even(x·log2 e), r = x − n·ln2 in two steps, a degree-5
// polynomial p ≈ exp(r), and the result p·2ⁿ formed as (p·2^⌊n/2⌋)·2^(n−⌊n/2⌋)
// so that both factors are normal floats: the last multiply rounds once,
// to a subnormal near the bottom of the range and to +Inf past the top, as
// the exact exponential does. Its error is within 2 ULP of the exact value
// over the normal range (checked against float64 in the tests), like the
// SIMD expf of llama.cpp's silu and softmax. Every step is one float32
// operation rounded on its own (explicit conversions keep the compiler from
// fusing a multiply and an add), in the order the AVX2 kernel uses, so both
// give the same bits. A NaN argument gives NaN (the AVX2 kernel too).
func expf(x float32) float32 {
	x = min(max(x, expfMin), expfMax)
	n := float32(math.RoundToEven(float64(x * expfLog2e)))
	r := x - float32(n*expfLn2Hi)
	r = r - float32(n*expfLn2Lo)
	r2 := r * r
	p := float32(expfP0*r) + expfP1
	p = float32(p*r) + expfP2
	p = float32(p*r) + expfP3
	p = float32(p*r) + expfP4
	p = float32(p*r) + expfP5
	p = float32(p*r2) + r
	p = p + 1
	a := int32(n) >> 1
	b := int32(n) - a
	p = p * pow2(a)
	return p * pow2(b)
}

// pow2 returns 2^k for k in [−126, 127].
func pow2(k int32) float32 { return math.Float32frombits(uint32(k+127) << 23) }

// The constants of expf (Cephes expf.c). Below expfMin the exact result
// rounds to 0 (or the smallest subnormal), above expfMax to +Inf; between
// them n stays within [−150, 128], whose halves are normal powers of two.
const (
	expfMin   float32 = -104
	expfMax   float32 = 89
	expfLog2e float32 = 1.44269504088896341
	expfLn2Hi float32 = 0.693359375
	expfLn2Lo float32 = -2.12194440e-4
	expfP0    float32 = 1.9875691500e-4
	expfP1    float32 = 1.3981999507e-3
	expfP2    float32 = 8.3334519073e-3
	expfP3    float32 = 4.1665795894e-2
	expfP4    float32 = 1.6666665459e-1
	expfP5    float32 = 5.0000001201e-1
)

// swigluGo is SwiGLU in pure Go, element by element as the AVX2 kernel
// computes it: SiLU(g)·u = (g / (1 + expf(−g)))·u.
func swigluGo(dst, gate, up []float32) {
	for i := range dst {
		g := gate[i]
		dst[i] = g / (1 + expf(-g)) * up[i]
	}
}

// expSubGo sets x[i] = expf(x[i] − m), as the AVX2 kernel does.
func expSubGo(x []float32, m float32) {
	for i, v := range x {
		x[i] = expf(v - m)
	}
}

// expSumSubGo is expSubGo for len(x) a multiple of 8 that also returns the
// values' sum as ggml's AVX2 softmax forms it, and as the AVX2 kernel
// does: each group of eight summed in float32 as ((e₀+e₄)+(e₂+e₆)) +
// ((e₁+e₅)+(e₃+e₇)), the groups' sums added in order in float64.
func expSumSubGo(x []float32, m float32) float64 {
	expSubGo(x, m)
	var sum float64
	for i := 0; i+8 <= len(x); i += 8 {
		e := (*[8]float32)(x[i:])
		s := ((e[0] + e[4]) + (e[2] + e[6])) + ((e[1] + e[5]) + (e[3] + e[7]))
		sum += float64(s)
	}
	return sum
}
