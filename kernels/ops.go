package kernels

import "math"

// RMSNorm sets dst[i] = x[i]·scale·w[i] with scale = 1/sqrt(mean(x²)+eps),
// mirroring ggml: the sum of float32 squares is accumulated in float64, the
// mean is rounded to float32, scale = 1/sqrtf(mean+eps), x is scaled, and the
// weight multiply is a separate float32 step (ggml_mul). w may be nil for no
// weight. dst may alias x; len(dst) and len(w) must be at least len(x).
func RMSNorm(dst, x, w []float32, eps float32) {
	n := len(x)
	if n == 0 {
		return
	}
	dst = dst[:n]
	var sum float64
	for _, v := range x {
		sum += float64(float32(v * v))
	}
	scaleRow(dst, x, w, rmsScale(sum, n, eps))
}

// RMSNormRows is RMSNorm over rows rows of dim values each (x and dst hold
// them one after another; dst may be x), bit for bit RMSNorm row by row.
// Each row's sum of squares is a float64 sum in element order, a chain of
// dependent additions; RMSNormRows runs four rows' chains side by side, so
// a wide batch's norms take about a quarter of the time.
func RMSNormRows(dst, x []float32, rows, dim int, w []float32, eps float32) {
	if dim == 0 {
		return
	}
	r := 0
	for ; r+4 <= rows; r += 4 {
		x0 := x[r*dim : (r+1)*dim]
		x1 := x[(r+1)*dim : (r+2)*dim]
		x2 := x[(r+2)*dim : (r+3)*dim]
		x3 := x[(r+3)*dim : (r+4)*dim]
		var s0, s1, s2, s3 float64
		for i := range x0 {
			a, b, c, d := x0[i], x1[i], x2[i], x3[i]
			s0 += float64(float32(a * a))
			s1 += float64(float32(b * b))
			s2 += float64(float32(c * c))
			s3 += float64(float32(d * d))
		}
		for k, sum := range [4]float64{s0, s1, s2, s3} {
			scaleRow(dst[(r+k)*dim:(r+k+1)*dim], x[(r+k)*dim:(r+k+1)*dim], w, rmsScale(sum, dim, eps))
		}
	}
	for ; r < rows; r++ {
		RMSNorm(dst[r*dim:(r+1)*dim], x[r*dim:(r+1)*dim], w, eps)
	}
}

// rmsScale is 1/sqrt(mean+eps) for a row's float64 sum of squares.
func rmsScale(sum float64, n int, eps float32) float32 {
	mean := float32(sum / float64(n))
	return 1 / float32(math.Sqrt(float64(mean+eps)))
}

// scaleRow sets dst = x·scale (·w when w is not nil), each product
// rounded: the vector kernels give the same bits as the loop.
func scaleRow(dst, x, w []float32, scale float32) {
	dst = dst[:len(x)]
	k := 0
	if simdF32() {
		k = len(x) &^ 7
	}
	if w == nil {
		if k > 0 {
			scaleF32SIMD(dst[:k], x[:k], scale)
		}
		for i := k; i < len(x); i++ {
			dst[i] = x[i] * scale
		}
		return
	}
	w = w[:len(x)]
	if k > 0 {
		scaleMulF32SIMD(dst[:k], x[:k], w[:k], scale)
	}
	for i := k; i < len(x); i++ {
		dst[i] = float32(x[i]*scale) * w[i]
	}
}

// Softmax replaces x with softmax(x) as ggml_soft_max does on x86 with
// AVX2: subtract the max, float32 exp (expf), sum each group of eight in
// float32 (a fixed tree) and the groups and the last len(x)%8 values in
// order in float64, multiply by the float32 reciprocal of the sum. An
// empty slice is left alone.
func Softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	mx := MaxF32(x)
	var sum float64
	m := len(x) &^ 7
	if m > 0 {
		if simdF32() {
			sum = expSubSIMD(x[:m], mx)
		} else {
			sum = expSumSubGo(x[:m], mx)
		}
	}
	for i := m; i < len(x); i++ {
		x[i] = expf(x[i] - mx)
		sum += float64(x[i])
	}
	Scale(x, float32(1/sum))
}

// MaxF32 returns the largest value in x, ignoring NaN: −Inf when x is empty
// or holds nothing but NaN and −Inf. The maximum does not depend on the
// order of the comparisons (a zero result may be either zero).
func MaxF32(x []float32) float32 {
	m, k := float32(math.Inf(-1)), 0
	if simdF32() {
		if k = len(x) &^ 31; k > 0 {
			m = maxF32SIMD(x[:k])
		}
	}
	for _, v := range x[k:] {
		if v > m { // NaN never is
			m = v
		}
	}
	return m
}

// SiLU returns x/(1+expf(-x)) in float32, as ggml_silu_f32.
func SiLU(x float32) float32 { return x / (1 + expf(-x)) }

// SwiGLU sets dst[i] = SiLU(gate[i])·up[i] for i < len(dst). dst may alias
// gate or up (element for element).
func SwiGLU(dst, gate, up []float32) {
	gate, up = gate[:len(dst)], up[:len(dst)]
	m := 0
	if simdF32() {
		if m = len(dst) &^ 7; m > 0 {
			swigluSIMD(dst[:m], gate[:m], up[:m])
		}
	}
	swigluGo(dst[m:], gate[m:], up[m:])
}

// Add sets dst[i] += a[i] for i < len(dst).
func Add(dst, a []float32) {
	a = a[:len(dst)]
	for i := range dst {
		dst[i] += a[i]
	}
}

// Scale sets dst[i] *= s.
func Scale(dst []float32, s float32) { scaleRow(dst, dst, nil, s) }
