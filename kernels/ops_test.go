package kernels

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestRMSNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, n := range []int{1, 7, 96, 4352} {
		x, w := randRow(r, n), randRow(r, n)
		dst := make([]float32, n)
		RMSNorm(dst, x, w, 1e-6)
		var ss float64
		for _, v := range x {
			ss += float64(v) * float64(v)
		}
		scale := 1 / math.Sqrt(ss/float64(n)+1e-6)
		for i := range x {
			want := float64(x[i]) * scale * float64(w[i])
			// float32 mean, sqrt, reciprocal and two products: a few ulps.
			if e := math.Abs(float64(dst[i]) - want); e > 4e-7*math.Abs(want)+1e-30 {
				t.Fatalf("n %d [%d] = %v, want %v", n, i, dst[i], want)
			}
		}
		// In place and without weight.
		y := append([]float32(nil), x...)
		RMSNorm(y, y, nil, 1e-6)
		for i := range x {
			if want := float64(x[i]) * scale; math.Abs(float64(y[i])-want) > 3e-7*math.Abs(want)+1e-30 {
				t.Fatalf("no weight: [%d] = %v, want %v", i, y[i], want)
			}
		}
	}
}

// TestRMSNormRows checks the four-row kernel bit for bit against RMSNorm
// row by row, with and without weights, in place and not, for row counts
// around its groups of four.
func TestRMSNormRows(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	for _, dim := range []int{1, 7, 96, 1024} {
		for rows := 0; rows <= 9; rows++ {
			x, w := randRow(r, rows*dim), randRow(r, dim)
			for i := range x {
				x[i] *= float32(math.Exp2(float64(r.IntN(40) - 20))) // a wide range of magnitudes
			}
			for _, weight := range [][]float32{w, nil} {
				want := make([]float32, rows*dim)
				for k := range rows {
					RMSNorm(want[k*dim:(k+1)*dim], x[k*dim:(k+1)*dim], weight, 1e-5)
				}
				got := make([]float32, rows*dim)
				RMSNormRows(got, x, rows, dim, weight, 1e-5)
				assertBits(t, "rows", got, want)
				in := append([]float32(nil), x...)
				RMSNormRows(in, in, rows, dim, weight, 1e-5)
				assertBits(t, "in place", in, want)
			}
		}
	}
}

func BenchmarkRMSNormRows(b *testing.B) {
	r := rand.New(rand.NewPCG(19, 20))
	const rows, dim = 16, 1024
	x, w, dst := randRow(r, rows*dim), randRow(r, dim), make([]float32, rows*dim)
	b.Run("rows", func(b *testing.B) {
		for b.Loop() {
			RMSNormRows(dst, x, rows, dim, w, 1e-5)
		}
	})
	b.Run("one-by-one", func(b *testing.B) {
		for b.Loop() {
			for k := range rows {
				RMSNorm(dst[k*dim:(k+1)*dim], x[k*dim:(k+1)*dim], w, 1e-5)
			}
		}
	})
}

func TestSoftmax(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, n := range []int{1, 5, 128, 4096} {
		x := randRow(r, n)
		for i := range x {
			x[i] *= 10
		}
		want := make([]float64, n)
		mx := math.Inf(-1)
		for _, v := range x {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for i, v := range x {
			want[i] = math.Exp(float64(v) - mx)
			sum += want[i]
		}
		x0 := append([]float32(nil), x...)
		Softmax(x)
		var got float64
		for i := range x {
			want[i] /= sum
			got += float64(x[i])
			// The float32 x−max is off by up to ½ulp(x−max), which exp turns
			// into a relative error of that size.
			bound := want[i] * (3e-7 + 1.2e-7*math.Abs(float64(x0[i])-mx))
			if e := math.Abs(float64(x[i]) - want[i]); e > bound+1e-45 {
				t.Fatalf("n %d [%d] = %v, want %v", n, i, x[i], want[i])
			}
		}
		if math.Abs(got-1) > 1e-5 {
			t.Fatalf("n %d: sums to %v", n, got)
		}
	}
	Softmax(nil)
}

func TestElementwise(t *testing.T) {
	cases := []struct{ x, want float64 }{{0, 0}, {1, 0.7310585786300049}, {-2, -0.2384058440442351}, {20, 19.999999958776925}, {-100, 0}} // expf(100) overflows to +Inf in float32, so -100/Inf = -0 as in ggml
	for _, c := range cases {
		if got := SiLU(float32(c.x)); math.Abs(float64(got)-c.want) > 2e-7*math.Abs(c.want)+1e-45 {
			t.Errorf("SiLU(%v) = %v, want %v", c.x, got, c.want)
		}
	}
	g := []float32{1, -2, 0.5}
	u := []float32{2, 3, -4}
	SwiGLU(g, g, u) // dst aliases gate
	for i, want := range []float32{SiLU(1) * 2, SiLU(-2) * 3, SiLU(0.5) * -4} {
		if g[i] != want {
			t.Errorf("SwiGLU[%d] = %v, want %v", i, g[i], want)
		}
	}
	a := []float32{1, 2}
	Add(a, []float32{0.5, -1})
	Scale(a, 2)
	if a[0] != 3 || a[1] != 2 {
		t.Errorf("Add/Scale = %v, want [3 2]", a)
	}
}

// TestMaxF32 checks MaxF32 at every SIMD level against a plain loop, with
// NaN, ±Inf and signed zeros at every position of short and long rows.
func TestMaxF32(t *testing.T) {
	r := rand.New(rand.NewPCG(71, 72))
	specials := []float32{float32(math.NaN()), float32(math.Inf(-1)), float32(math.Inf(1)), 0, float32(math.Copysign(0, -1)), -3e38, 3e38}
	for _, n := range []int{0, 1, 7, 31, 32, 33, 64, 95, 1000, 32000} {
		for trial := range 20 {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(r.NormFloat64() * 10)
				if trial%4 == 0 {
					x[i] = -float32(r.Float64()) // all ≤ 0: zeros may win
				}
				if r.IntN(8) == 0 {
					x[i] = specials[r.IntN(len(specials))]
				}
			}
			if trial == 1 {
				for i := range x {
					x[i] = float32(math.NaN())
				}
			}
			want := float32(math.Inf(-1))
			for _, v := range x {
				if v > want {
					want = v
				}
			}
			for _, lv := range simdLevels() {
				var got float32
				withSIMD(lv, func() { got = MaxF32(x) })
				if got != want { // +0 == −0: either zero is the maximum
					t.Fatalf("n=%d trial %d %s: MaxF32 = %v, want %v", n, trial, lv, got, want)
				}
			}
		}
	}
}

// TestSoftmaxLevels checks that Softmax is bit-identical at every SIMD
// level (the AVX2 and AVX-512 kernels' exponentials and grouped sums
// against expSumSubGo), at lengths around multiples of 8 and 16 and with
// -Inf entries.
func TestSoftmaxLevels(t *testing.T) {
	r := rand.New(rand.NewPCG(73, 74))
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 24, 40, 64, 65, 100, 1000, 4099} {
		for trial := range 10 {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(r.NormFloat64() * float64(1+trial))
				if r.IntN(20) == 0 {
					x[i] = float32(math.Inf(-1))
				}
			}
			var want []float32
			for _, lv := range simdLevels() {
				got := append([]float32(nil), x...)
				withSIMD(lv, func() { Softmax(got) })
				if want == nil {
					want = got
					continue
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("n=%d trial %d %s: x[%d] = %v, Go %v", n, trial, lv, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestScaleRowSIMD checks the vector scale kernels (scaleRow with and
// without weights, Scale, in place and into another slice) against the Go
// loops bit for bit, at lengths around multiples of 8 and with NaN, ±Inf,
// subnormals, signed zeros and products that overflow or underflow, and
// RMSNorm and Scale with NaNs of different payloads in the row and the
// scale against the pure-Go level (which NaN survives a product of two
// depends on operand order). Softmax is left out: its exp kernels already
// make other NaN payloads than the Go expf.
func TestScaleRowSIMD(t *testing.T) {
	if !simdF32() {
		t.Skip("no SIMD")
	}
	r := rand.New(rand.NewPCG(71, 72))
	special := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-40, -1e-45, 0, float32(math.Copysign(0, -1)), 3e38, -3e38, 1e-30}
	val := func() float32 {
		if r.IntN(4) == 0 {
			return special[r.IntN(len(special))]
		}
		return float32(r.NormFloat64() * 10)
	}
	for n := 0; n <= 41; n++ {
		for _, scale := range []float32{0.7, 3e10, 1e-20, -2, float32(math.Inf(1))} {
			x, w := make([]float32, n), make([]float32, n)
			for i := range x {
				x[i], w[i] = val(), val()
			}
			for _, weighted := range []bool{false, true} {
				ww := w
				if !weighted {
					ww = nil
				}
				want := make([]float32, n)
				for i := range x {
					if weighted {
						want[i] = float32(x[i]*scale) * w[i]
					} else {
						want[i] = x[i] * scale
					}
				}
				got := make([]float32, n)
				scaleRow(got, x, ww, scale)
				what := "n=" + itoa(n) + "/weighted=" + strconv.FormatBool(weighted)
				assertBits(t, what, got, want)
				inPlace := append([]float32(nil), x...)
				scaleRow(inPlace, inPlace, ww, scale)
				assertBits(t, what+"/in place", inPlace, want)
				if !weighted {
					s := append([]float32(nil), x...)
					Scale(s, scale)
					assertBits(t, what+"/Scale", s, want)
				}
			}
		}
	}
}

// BenchmarkSoftmax runs Softmax over a decode step's attention row (70
// positions) and a long prompt's (1500).
func BenchmarkSoftmax(b *testing.B) {
	r := rand.New(rand.NewPCG(73, 74))
	for _, n := range []int{70, 1500} {
		src, x := randRow(r, n), make([]float32, n)
		b.Run(itoa(n), func(b *testing.B) {
			for b.Loop() {
				copy(x, src)
				Softmax(x)
			}
		})
	}
}

func TestScaleNaNPayloads(t *testing.T) {
	if !simdF32() {
		t.Skip("no SIMD")
	}
	nan1, nan2 := math.Float32frombits(0x7fc00011), math.Float32frombits(0xffc00022)
	row := []float32{nan1, nan2, 1, 2, 3, 4, 5, 6, nan1, nan2, 7}
	w := []float32{1, nan1, 2, nan2, 3, 4, 5, 6, 7, 8, 9}
	run := func(f func(x []float32)) []float32 {
		x := append([]float32(nil), row...)
		f(x)
		return x
	}
	for name, f := range map[string]func(x []float32){
		"RMSNorm":          func(x []float32) { RMSNorm(x, x, nil, 1e-5) },
		"RMSNorm weighted": func(x []float32) { RMSNorm(x, x, w, 1e-5) },
		"RMSNormRows":      func(x []float32) { RMSNormRows(x[:8], x[:8], 4, 2, w[:2], 1e-5) },
		"Scale by NaN":     func(x []float32) { Scale(x, nan2) },
		"scaleRow by NaN":  func(x []float32) { scaleRow(x, x, w, nan2) },
	} {
		got := run(f)
		var want []float32
		withSIMD(simdGo, func() { want = run(f) })
		assertBits(t, name, got, want)
	}
}
