package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpd checks expd against a float64 reference (math.Exp) to within
// 4 ulp over the whole range it serves, and its edges: 0 at x = 0 gives 1,
// NaN, −Inf and anything below −708 give 0.
func TestExpd(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	check := func(x float64) {
		got, want := expd(x), math.Exp(x)
		if ulps := math.Abs(got-want) / (math.Nextafter(want, math.Inf(1)) - want); ulps > 4 {
			t.Fatalf("expd(%v) = %v, math.Exp = %v (%.1f ulp)", x, got, want, ulps)
		}
	}
	for range 200000 {
		check(-708 * r.Float64())
	}
	for range 20000 {
		check(-r.Float64()) // near 0, where most sampling weights live
	}
	for _, x := range []float64{0, -1e-300, -0.5 * math.Ln2, -math.Ln2, -1, -100, -707.9999} {
		check(x)
	}
	for _, x := range []float64{-708.0000001, -745, -1e300, math.Inf(-1), math.NaN()} {
		if got := expd(x); got != 0 {
			t.Errorf("expd(%v) = %v, want 0", x, got)
		}
	}
	if expd(0) != 1 {
		t.Errorf("expd(0) = %v", expd(0))
	}
}

// TestExpSum checks the SIMD ExpSum against the Go one bit for bit (weights
// and sum), for lengths around multiples of 4 and logits with NaN, ±Inf-like
// and far-below-max values, at several temperatures.
func TestExpSum(t *testing.T) {
	r := rand.New(rand.NewPCG(53, 54))
	for _, n := range []int{0, 1, 3, 4, 5, 8, 12, 31, 36, 44, 63, 32000} { // the AVX-512 kernel: 32, 8 and 4 at a time
		l := make([]float32, n)
		m := float32(math.Inf(-1))
		for i := range l {
			l[i] = float32(r.NormFloat64() * 8)
			switch r.IntN(50) {
			case 0:
				l[i] = float32(math.NaN())
			case 1:
				l[i] = float32(math.Inf(-1))
			case 2:
				l[i] = -3e4
			}
			if l[i] > m {
				m = l[i]
			}
		}
		for _, invT := range []float64{1, 1 / 0.7, 1 / 1.5, 100} {
			var got, want float64
			wg, ww := make([]float64, n), make([]float64, n)
			withSIMD(simdGo, func() { want = ExpSum(ww, l, m, invT) })
			for _, lv := range simdLevels() {
				withSIMD(lv, func() { got = ExpSum(wg, l, m, invT) })
				if math.Float64bits(got) != math.Float64bits(want) {
					t.Fatalf("n=%d invT=%v %s: sum %v, Go %v", n, invT, lv, got, want)
				}
				for i := range wg {
					if math.Float64bits(wg[i]) != math.Float64bits(ww[i]) {
						t.Fatalf("n=%d invT=%v %s: w[%d] = %v, Go %v (l %v)", n, invT, lv, i, wg[i], ww[i], l[i])
					}
				}
			}
		}
	}
}

func BenchmarkExpSum(b *testing.B) {
	r := rand.New(rand.NewPCG(55, 56))
	l := make([]float32, 32000)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 4)
	}
	w := make([]float64, len(l))
	b.Run("ExpSum", func(b *testing.B) {
		for b.Loop() {
			ExpSum(w, l, 20, 1)
		}
	})
	b.Run("math.Exp", func(b *testing.B) {
		for b.Loop() {
			var s float64
			for i, x := range l {
				w[i] = math.Exp(float64(x-20) * 1)
				s += w[i]
			}
			_ = s
		}
	})
}
