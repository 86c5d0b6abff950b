package kernels

import (
	"math"
	"testing"
)

// f16Value decodes binary16 in float64 straight from the IEEE definition.
func f16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	switch exp {
	case 0x1f:
		if mant != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	case 0:
		return sign * mant * math.Ldexp(1, -24)
	}
	return sign * (1 + mant/1024) * math.Ldexp(1, exp-15)
}

func isNaN16(h uint16) bool { return h&0x7c00 == 0x7c00 && h&0x3ff != 0 }

func TestF16Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := F16ToF32(h)
		if isNaN16(h) {
			if !math.IsNaN(float64(f)) {
				t.Fatalf("F16ToF32(%#04x) = %v, want NaN", h, f)
			}
			if got := F32ToF16(f); got != h&0x8000|0x7e00 {
				t.Fatalf("F32ToF16(NaN from %#04x) = %#04x, want %#04x", h, got, h&0x8000|0x7e00)
			}
			continue
		}
		want := f16Value(h)
		if float64(f) != want || math.Signbit(float64(f)) != (h&0x8000 != 0) {
			t.Fatalf("F16ToF32(%#04x) = %v, want %v", h, f, want)
		}
		if f != f16ToF32Slow(h) {
			t.Fatalf("table and slow path disagree at %#04x", h)
		}
		if got := F32ToF16(f); got != h {
			t.Fatalf("F32ToF16(F16ToF32(%#04x)) = %#04x", h, got)
		}
	}
}

// TestF16Rounding checks round-to-nearest-even at every midpoint between
// consecutive positive binary16 values (exact in float32), and just off it.
func TestF16Rounding(t *testing.T) {
	for h := uint16(0); h < 0x7c00; h++ {
		a, b := F16ToF32(h), F16ToF32(h+1) // b may be +Inf for h = 0x7bff
		var mid float32
		if h+1 == 0x7c00 {
			mid = 65520 // halfway from 65504 to the would-be 65536
		} else {
			mid = float32((float64(a) + float64(b)) / 2)
		}
		even := h
		if h&1 == 1 {
			even = h + 1
		}
		for _, sign := range []float32{1, -1} {
			s := uint16(0)
			if sign < 0 {
				s = 0x8000
			}
			if got := F32ToF16(sign * mid); got != even|s {
				t.Fatalf("F32ToF16(%g) = %#04x, want %#04x (tie to even)", sign*mid, got, even|s)
			}
			up := math.Nextafter32(mid, float32(math.Inf(1)))
			if got := F32ToF16(sign * up); got != (h+1)|s {
				t.Fatalf("F32ToF16(%g) = %#04x, want %#04x", sign*up, got, (h+1)|s)
			}
			down := math.Nextafter32(mid, 0)
			if got := F32ToF16(sign * down); got != h|s {
				t.Fatalf("F32ToF16(%g) = %#04x, want %#04x", sign*down, got, h|s)
			}
		}
	}
	cases := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"max", 65504, 0x7bff},
		{"overflow", 1e6, 0x7c00},
		{"-inf", float32(math.Inf(-1)), 0xfc00},
		{"smallest subnormal", float32(math.Ldexp(1, -24)), 0x0001},
		{"half smallest subnormal ties to zero", float32(math.Ldexp(1, -25)), 0x0000},
		{"above half smallest subnormal", math.Nextafter32(float32(math.Ldexp(1, -25)), 1), 0x0001},
		{"f32 subnormal", math.Float32frombits(1), 0x0000},
		{"-0", float32(math.Copysign(0, -1)), 0x8000},
		{"nan", float32(math.NaN()), 0x7e00},
		{"-nan", math.Float32frombits(0xffc00001), 0xfe00},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := F32ToF16(c.in); got != c.want {
				t.Errorf("F32ToF16(%g) = %#04x, want %#04x", c.in, got, c.want)
			}
		})
	}
}

func TestBF16(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := BF16ToF32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToF32(%#04x) bits = %#08x", h, math.Float32bits(f))
		}
		if math.IsNaN(float64(f)) {
			if got := F32ToBF16(f); got != h|64 {
				t.Fatalf("F32ToBF16(NaN %#04x) = %#04x, want quiet %#04x", h, got, h|64)
			}
			continue
		}
		if got := F32ToBF16(f); got != h {
			t.Fatalf("F32ToBF16(BF16ToF32(%#04x)) = %#04x", h, got)
		}
		// Midpoint to the next value (positive finite only): ties to even.
		if h < 0x7f7f {
			mid := math.Float32frombits(uint32(h)<<16 | 0x8000)
			even := h + h&1
			if got := F32ToBF16(mid); got != even {
				t.Fatalf("F32ToBF16(mid above %#04x) = %#04x, want %#04x", h, got, even)
			}
			if got := F32ToBF16(math.Nextafter32(mid, float32(math.Inf(1)))); got != h+1 {
				t.Fatalf("F32ToBF16(just above mid %#04x) = %#04x", h, got)
			}
			if got := F32ToBF16(math.Nextafter32(mid, 0)); got != h {
				t.Fatalf("F32ToBF16(just below mid %#04x) = %#04x", h, got)
			}
		}
	}
	if got := F32ToBF16(math.MaxFloat32); got != 0x7f80 {
		t.Errorf("F32ToBF16(MaxFloat32) = %#04x, want +Inf 0x7f80", got)
	}
	if got := F32ToBF16(math.Float32frombits(0x7f800001)); got != 0x7fc0 {
		t.Errorf("F32ToBF16(sNaN) = %#04x, want 0x7fc0", got)
	}
}
