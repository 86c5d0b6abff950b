package kernels

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// fma32Exact is x·y + z computed exactly and rounded once to float32.
func fma32Exact(x, y, z float32) float32 {
	const prec = 400
	bx := new(big.Float).SetPrec(prec).SetFloat64(float64(x))
	by := new(big.Float).SetPrec(prec).SetFloat64(float64(y))
	bz := new(big.Float).SetPrec(prec).SetFloat64(float64(z))
	r := new(big.Float).SetPrec(prec).Mul(bx, by)
	r.Add(r, bz)
	f, _ := r.Float32() // nearest, ties to even
	return f
}

// TestFMA32 checks fma32 against exact arithmetic: random operands over a
// wide exponent range, near-cancellations, float32 midpoints that a plain
// float64 sum would round onto (double rounding), and denormals.
func TestFMA32(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	check := func(x, y, z float32) {
		t.Helper()
		got, want := fma32(x, y, z), fma32Exact(x, y, z)
		if math.Float32bits(got) != math.Float32bits(want) && !(got == 0 && want == 0) {
			t.Fatalf("fma32(%g, %g, %g) = %g (%#x), want %g (%#x)", x, y, z, got, math.Float32bits(got), want, math.Float32bits(want))
		}
	}
	rnd := func(lo, hi int) float32 {
		m := 1 + r.Float64()
		if r.IntN(2) == 0 {
			m = -m
		}
		return float32(math.Ldexp(m, lo+r.IntN(hi-lo+1)))
	}
	// x·y a float32 midpoint, z far below float64's precision: the float64
	// sum lands on the midpoint and ties-to-even would round the wrong way.
	mid := float32(1 + 1.0/4096)
	for _, z := range []float32{0x1p-80, -0x1p-80, 0x1p-60, -0x1p-60} {
		check(mid, mid, z)
		check(-mid, mid, z)
	}
	// The same in float32's subnormal range, where the rounding position
	// is fixed: |x·y + z| = 2⁻¹²⁷ + 2⁻¹⁵⁰ + 2⁻¹⁸², whose float64 sum drops
	// the last term onto a tie.
	check((1+0x1p-16)*0x1p-75, (1-0x1p-16)*0x1p-75, -(0x1p-127 + 0x1p-149))
	check((1+0x1p-16)*0x1p-75, -(1-0x1p-16)*0x1p-75, 0x1p-127+0x1p-149)
	for range 200000 {
		x, y := rnd(-30, 30), rnd(-30, 30)
		check(x, y, rnd(-90, 90))
		p := float32(float64(x) * float64(y))
		check(x, y, -p)                                  // cancellation
		check(x, y, -p*(1+float32(r.IntN(7)-3)/(1<<23))) // near-cancellation
	}
	for range 20000 { // denormal products and sums
		x, y := rnd(-75, -60), rnd(-75, -60)
		check(x, y, rnd(-149, -126))
	}
	check(float32(math.Inf(1)), 1, 1)
	check(math.MaxFloat32, 2, -math.MaxFloat32)
	if v := fma32(float32(math.NaN()), 1, 1); v == v {
		t.Errorf("NaN operand gave %g", v)
	}
}
