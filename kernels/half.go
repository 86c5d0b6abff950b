package kernels

import "math"

// f16Table maps every IEEE binary16 bit pattern to its float32 value (256 KiB,
// the same trade ggml makes with ggml_table_f32_f16).
var f16Table [1 << 16]float32

func init() {
	for i := range f16Table {
		f16Table[i] = f16ToF32Slow(uint16(i))
	}
}

// F16ToF32 converts an IEEE 754 binary16 value to float32. The conversion is
// exact; NaNs keep sign and payload and come back quiet, as F16C does.
func F16ToF32(h uint16) float32 { return f16Table[h] }

func f16ToF32Slow(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		if mant != 0 {
			return math.Float32frombits(sign | 0x7fc00000 | mant<<13)
		}
		return math.Float32frombits(sign | 0x7f800000)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: mant·2⁻²⁴. Normalize so bit 10 is the implicit one.
	e := uint32(127 - 14)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// F32ToF16 converts a float32 to IEEE 754 binary16 with round-to-nearest-even,
// producing subnormals, ±Inf on overflow, and for NaN the sign with the quiet
// NaN 0x7E00, exactly as ggml_compute_fp32_to_fp16 does.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // biased binary16 exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e >= 1 {
		// Normal: keep 10 mantissa bits, round the 13 dropped ones. A carry
		// out of the mantissa bumps the exponent, and past 30 gives Inf.
		v := uint32(e)<<10 | mant>>13
		rem := mant & 0x1fff
		if rem > 0x1000 || (rem == 0x1000 && v&1 == 1) {
			v++
		}
		return sign | uint16(v)
	}
	// Subnormal result (or zero): value = full·2^(exp-150), f16 units are 2⁻²⁴.
	shift := uint32(14 - e)
	if shift > 24 {
		return sign // below half the smallest subnormal
	}
	full := mant | 0x800000
	v := full >> shift
	rem := full & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || (rem == half && v&1 == 1) {
		v++
	}
	return sign | uint16(v)
}

// BF16ToF32 converts a bfloat16 value to float32 (exact).
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts a float32 to bfloat16 with round-to-nearest-even, keeping
// subnormals; a NaN keeps its top bits and is forced quiet. This is
// ggml_compute_fp32_to_bf16.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + (0x7fff + (u>>16)&1)) >> 16)
}
