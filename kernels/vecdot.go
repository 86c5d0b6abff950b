package kernels

import (
	"encoding/binary"
	"math"
)

// VecDotType is the type an activation row is converted to before it is
// dotted with a weight row of type t, as in ggml's type traits: F32 and BF16
// pair with themselves, Q8_0 and Q4_0 with Q8_0, the K-quants with Q8_K.
//
// F16 weights meet F32 activations. ggml's generic traits pair F16 with F16,
// but the llama.cpp we check parity against (node-llama-cpp's prebuilt x86
// CPU build) gives bit-identical logits for an F16 file and its F32 copy, so
// it keeps activations in F32; rounding them to F16 was measured to cost
// ~7e-3 on the logits of the tiny parity model for no gain.
// For a type with no dot kernel (see HasVecDot) it returns t.
func (t DType) VecDotType() DType {
	switch t {
	case F16:
		return F32
	case Q4_0, Q8_0:
		return Q8_0
	case Q4_K, Q6_K, Q8_K:
		return Q8_K
	}
	return t
}

// HasVecDot reports whether VecDot and MatMul support weights of type t.
func (t DType) HasVecDot() bool { return vecDotFunc(t) != nil }

// dotFunc computes the dot product of n elements of a weight row w with an
// activation row a already in the weight type's VecDotType.
type dotFunc func(n int, w, a []byte) float32

func vecDotFunc(t DType) dotFunc {
	switch t {
	case F32:
		return dotF32
	case F16:
		return dotF16
	case BF16:
		return dotBF16
	case Q8_0:
		return dotQ8_0
	case Q4_0:
		return dotQ4_0
	case Q4_K:
		return dotQ4K
	case Q6_K:
		return dotQ6K
	}
	return nil
}

// VecDot returns the dot product of n elements of weight row w (type t) with
// activation row a, already converted to t.VecDotType(). n must be a multiple
// of t's block size and both rows must hold n elements; it panics otherwise,
// or if t has no dot kernel.
//
// Reduction order mirrors ggml's generic kernels: for block types an exact
// integer sum per block, scaled by the two block scales in float32 and
// accumulated in float32 (Q4_K and Q6_K in ggml's 8 float lanes, summed at the
// end); for BF16 float32 products accumulated in float64; for F32 and F16
// (against F32 activations) float32 products in DotF32's 16-lane order, as
// the SIMD MatMul computes them.
func VecDot(t DType, n int, w, a []byte) float32 {
	f := vecDotFunc(t)
	if f == nil {
		panic("kernels: VecDot: no dot kernel for " + t.String())
	}
	if n%t.BlockSize() != 0 {
		panic("kernels: VecDot: n not a multiple of the block size")
	}
	return f(n, w, a)
}

// dotF32 dots F32 weights with F32 activations in DotF32's defined order.
func dotF32(n int, w, a []byte) float32 { return dotFloatBytes(false, n, w, a) }

// dotF16 dots F16 weights with F32 activations in DotF32's defined order.
func dotF16(n int, w, a []byte) float32 { return dotFloatBytes(true, n, w, a) }

func dotBF16(n int, w, a []byte) float32 {
	w, a = w[:2*n], a[:2*n]
	var sum float64
	for i := 0; i < len(w) && i < len(a); i += 2 {
		x := BF16ToF32(binary.LittleEndian.Uint16(w[i:]))
		y := BF16ToF32(binary.LittleEndian.Uint16(a[i:]))
		sum += float64(float32(x * y))
	}
	return float32(sum)
}

// dotQ8_0 is ggml_vec_dot_q8_0_q8_0: per block sumf += sumi·(dw·da), the
// multiply-add fused (one rounding), as ggml's x86 builds compute it.
func dotQ8_0(n int, w, a []byte) float32 {
	nb := n / QK
	var sumf float32
	for ib := range nb {
		x := (*[q8_0Bytes]byte)(w[ib*q8_0Bytes:])
		y := (*[q8_0Bytes]byte)(a[ib*q8_0Bytes:])
		sumi := dotI8x32((*[QK]byte)(x[2:]), (*[QK]byte)(y[2:]))
		sumf = fma32(float32(sumi), f16At(x[:])*f16At(y[:]), sumf)
	}
	return sumf
}

// dotI8x32 is the exact int32 dot product of two blocks of 32 int8.
func dotI8x32(x, y *[QK]byte) int32 {
	var s0, s1, s2, s3 int32
	for j := 0; j < QK; j += 4 {
		xs := (*[4]byte)(x[j:])
		ys := (*[4]byte)(y[j:])
		s0 += int32(int8(xs[0])) * int32(int8(ys[0]))
		s1 += int32(int8(xs[1])) * int32(int8(ys[1]))
		s2 += int32(int8(xs[2])) * int32(int8(ys[2]))
		s3 += int32(int8(xs[3])) * int32(int8(ys[3]))
	}
	return s0 + s1 + s2 + s3
}

// dotQ4_0 is ggml_vec_dot_q4_0_q8_0: per block sumf += (sumi·dw)·da, the
// last multiply-add fused.
func dotQ4_0(n int, w, a []byte) float32 {
	nb := n / QK
	var sumf float32
	for ib := range nb {
		x := (*[q4_0Bytes]byte)(w[ib*q4_0Bytes:])
		y := (*[q8_0Bytes]byte)(a[ib*q8_0Bytes:])
		qs := (*[QK / 2]byte)(x[2:])
		lo := (*[QK / 2]byte)(y[2:])
		hi := (*[QK / 2]byte)(y[2+QK/2:])
		var s0, s1 int32
		for j := range QK / 2 {
			q := qs[j]
			s0 += (int32(q&0xf) - 8) * int32(int8(lo[j]))
			s1 += (int32(q>>4) - 8) * int32(int8(hi[j]))
		}
		sumf = fma32(float32(s0+s1)*f16At(x[:]), f16At(y[:]), sumf)
	}
	return sumf
}

// q8KBlock returns the float scale, quants and bsums of a Q8_K block.
func q8KBlock(b []byte) (d float32, qs *[QKK]byte, bsums *[32]byte) {
	y := (*[q8KBytes]byte)(b)
	return math.Float32frombits(binary.LittleEndian.Uint32(y[0:])), (*[QKK]byte)(y[4:]), (*[32]byte)(y[4+QKK:])
}

// dotQ4K is ggml_vec_dot_q4_K_q8_K (generic). Integer products are summed
// into 8 lanes (lane l takes elements ≡ l mod 8) weighted by the sub-block
// scale; the mins term uses the Q8_K bsums. Per super-block the lanes are
// scaled by dw·da into 8 float32 lane sums, and dmin·da·Σbsums·mins is
// subtracted from the total; the lane sums are added at the end.
func dotQ4K(n int, w, a []byte) float32 {
	nb := n / QKK
	var sums [8]float32
	var sumf float32
	for i := range nb {
		x := (*[q4KBytes]byte)(w[i*q4KBytes:])
		ad, q8, bsums := q8KBlock(a[i*q8KBytes:])
		sc := (*[12]byte)(x[4:16])
		var sumi int32
		var aux32 [8]int32
		for c := range 4 {
			s1, m1 := scaleMinK4(2*c, sc)
			s2, m2 := scaleMinK4(2*c+1, sc)
			sumi += int32(int16(binary.LittleEndian.Uint16(bsums[8*c:])))*int32(m1) +
				int32(int16(binary.LittleEndian.Uint16(bsums[8*c+2:])))*int32(m1) +
				int32(int16(binary.LittleEndian.Uint16(bsums[8*c+4:])))*int32(m2) +
				int32(int16(binary.LittleEndian.Uint16(bsums[8*c+6:])))*int32(m2)
			q4 := (*[32]byte)(x[16+32*c:])
			lo := (*[32]byte)(q8[64*c:])
			hi := (*[32]byte)(q8[64*c+32:])
			for l := range 8 {
				a0 := int32(q4[l]&0xf)*int32(int8(lo[l])) +
					int32(q4[l+8]&0xf)*int32(int8(lo[l+8])) +
					int32(q4[l+16]&0xf)*int32(int8(lo[l+16])) +
					int32(q4[l+24]&0xf)*int32(int8(lo[l+24]))
				a1 := int32(q4[l]>>4)*int32(int8(hi[l])) +
					int32(q4[l+8]>>4)*int32(int8(hi[l+8])) +
					int32(q4[l+16]>>4)*int32(int8(hi[l+16])) +
					int32(q4[l+24]>>4)*int32(int8(hi[l+24]))
				aux32[l] += int32(s1)*a0 + int32(s2)*a1
			}
		}
		d := float32(f16At(x[0:]) * ad)
		for l := range sums {
			sums[l] += float32(d * float32(aux32[l]))
		}
		dmin := float32(f16At(x[2:]) * ad)
		sumf -= float32(dmin * float32(sumi))
	}
	for _, s := range sums {
		sumf += s
	}
	return sumf
}

// dotQ6K is ggml_vec_dot_q6_K_q8_K (generic): 6-bit quants minus 32 times
// the Q8_K quants, weighted per 16 elements by the int8 scale, into 8 integer
// lanes; per super-block the lanes are scaled by dw·da into 8 float32 lane
// sums, added at the end.
func dotQ6K(n int, w, a []byte) float32 {
	nb := n / QKK
	var sums [8]float32
	var q6 [QKK]int32
	for i := range nb {
		x := (*[q6KBytes]byte)(w[i*q6KBytes:])
		ad, q8, _ := q8KBlock(a[i*q8KBytes:])
		for h := range 2 {
			ql := (*[64]byte)(x[64*h:])
			qh := (*[32]byte)(x[128+32*h:])
			out := (*[128]int32)(q6[128*h:])
			for l := range 32 {
				b := qh[l]
				out[l] = int32(ql[l]&0xf|(b&3)<<4) - 32
				out[l+32] = int32(ql[l+32]&0xf|(b>>2&3)<<4) - 32
				out[l+64] = int32(ql[l]>>4|(b>>4&3)<<4) - 32
				out[l+96] = int32(ql[l+32]>>4|(b>>6&3)<<4) - 32
			}
		}
		sc := (*[16]byte)(x[192:])
		var aux32 [8]int32
		for j := range QKK / 16 {
			s := int32(int8(sc[j]))
			qa := (*[16]int32)(q6[16*j:])
			qb := (*[16]byte)(q8[16*j:])
			for l := range 8 {
				aux32[l] += s * (qa[l]*int32(int8(qb[l])) + qa[l+8]*int32(int8(qb[l+8])))
			}
		}
		d := float32(f16At(x[208:]) * ad)
		for l := range sums {
			sums[l] += float32(d * float32(aux32[l]))
		}
	}
	var sumf float32
	for _, s := range sums {
		sumf += s
	}
	return sumf
}
