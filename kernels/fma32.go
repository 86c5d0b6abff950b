package kernels

import "math"

// fma32 returns x·y + z rounded once to float32, as VFMADD231PS computes it.
//
// The product of two float32 values is exact in float64 (48 significant
// bits), so only the sum rounds. Rounding it to float64 and then to float32
// can go wrong only when the float64 sum lands exactly on a float32
// midpoint (or in float32's subnormal range, where that test does not
// apply); there the sum is rounded to odd instead (an inexact result keeps
// its last bit set), after which rounding to float32 — 29 bits shorter —
// is the correctly rounded fused result.
func fma32(x, y, z float32) float32 {
	p, c := float64(x)*float64(y), float64(z)
	s := p + c
	b := math.Float64bits(s)
	if b&(1<<29-1) != 1<<28 && math.Abs(s) >= 0x1p-126 {
		return float32(s) // not a float32 tie: one rounding
	}
	if math.IsInf(s, 0) || math.IsNaN(s) {
		return float32(s)
	}
	// Knuth's TwoSum: e is the exact rounding error of s = p + c.
	v := s - p
	e := (p - (s - v)) + (c - v)
	if e != 0 && b&1 == 0 {
		// Inexact with an even last bit: the odd neighbour lies on the
		// side of the exact sum.
		if (e > 0) == (s > 0) {
			b++
		} else {
			b--
		}
		s = math.Float64frombits(b)
	}
	return float32(s)
}
