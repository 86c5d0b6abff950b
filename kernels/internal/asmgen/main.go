// Command asmgen generates the amd64 assembly of package kernels with avo:
//
//	go run . -out ../../matmul_amd64.s -stubs ../../matmul_amd64_stubs.go -pkg kernels
//
// It lives in its own module so the main module does not depend on avo.
//
// The quantized kernels vectorize across output elements: a SIMD lane is one
// (weight row, activation row) pair and accumulates that pair's blocks in
// order, with exactly the integer block sum and the float32 operations of the
// pure-Go VecDot (the scale multiply, then the block's multiply-add into the
// accumulator fused, VFMADD231PS against Go's fma32), so results are
// bit-identical.
// The float kernels (attn.go) vectorize along the reduction in a defined
// 16-lane order that the pure-Go code reproduces.
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// floatActs512 is the most activation rows of the AVX-512 float tile kernels
// (4 weight rows × 1..floatActs512 activation rows).
const floatActs512 = 6

// maxRowActs is the most activation rows of the multi-row VNNI row kernels.
const maxRowActs = 18

const (
	q8Bytes = 34 // f16 d, 32 × int8
	q4Bytes = 18 // f16 d, 16 bytes of nibbles
)

func main() {
	ConstraintExpr("amd64,!purego")
	rowKernel("dotQ8_0x8AVX2", false)
	rowKernel("dotQ4_0x8AVX2", true)
	rowKernelVNNI("dotQ8_0x16VNNI", false, false)
	rowKernelVNNI("dotQ4_0x16VNNI", true, false)
	rowKernelVNNI("dotQ4_0x16GFNI", true, true)
	for na := 1; na <= maxRowActs; na++ {
		rowKernelVNNIMulti(fmt.Sprintf("dotQ8_0x16x%dVNNI", na), false, false, na)
		rowKernelVNNIMulti(fmt.Sprintf("dotQ4_0x16x%dVNNI", na), true, false, na)
		rowKernelVNNIMulti(fmt.Sprintf("dotQ4_0x16x%dGFNI", na), true, true, na)
		rowKernelVNNITiled(fmt.Sprintf("tileQ8_0x16x%dVNNI", na), false, na)
		rowKernelVNNITiled(fmt.Sprintf("tileQ4_0x16x%dVNNI", na), true, na)
	}
	tilePackKernel("packTileQ8_0VNNI", false, false)
	tilePackKernel("packTileQ4_0VNNI", true, false)
	tilePackKernel("packTileQ4_0GFNI", true, true)
	dotKernel()
	axpyKernel()
	scaleKernel(false)
	scaleKernel(true)
	f16RowKernel()
	scoresKernel(false)
	scoresKernel(true)
	accumKernel(false)
	accumKernel(true)
	for nv := 1; nv <= 8; nv++ {
		accumKernel512(false, nv)
		accumKernel512(true, nv)
		scoresKernel512(false, nv)
		scoresKernel512(true, nv)
	}
	quantQ8Kernel()
	floatRowKernel(false)
	floatRowKernel(true)
	roundF16Kernel()
	f32ToF16Kernel()
	swigluKernel(false)
	swigluKernel(true)
	expSubKernel()
	expSub512Kernel()
	expSumKernel()
	expSumKernel512()
	maxF32Kernel()
	packRowKernel()
	quantPackKernel()
	prefetchRowsKernel()
	peakKernel("peakVNNI512", true, true)
	peakKernel("peakFMA512", false, true)
	peakKernel("peakFMA256", false, false)
	floatBatchKernel(false)
	floatBatchKernel(true)
	for _, f16 := range []bool{true, false} {
		floatTileKernel512(f16, 8, 1)
		for na := 1; na <= floatActs512; na++ {
			floatTileKernel512(f16, 4, na)
		}
	}
	Generate()
}

// rows addresses the same byte of 8 weight rows from two base registers
// (rows 0–3 and 4–7) and the stride.
type rows struct {
	b0, b4, stride, s3 Register
}

func (r rows) mem(i, disp int) Mem {
	b := r.b0
	if i >= 4 {
		b, i = r.b4, i-4
	}
	switch i {
	case 0:
		return Mem{Base: b, Disp: disp}
	case 1:
		return Mem{Base: b, Index: r.stride, Scale: 1, Disp: disp}
	case 2:
		return Mem{Base: b, Index: r.stride, Scale: 2, Disp: disp}
	default:
		return Mem{Base: b, Index: r.s3, Scale: 1, Disp: disp}
	}
}

// zmmConst returns a ZMM with v in every 32-bit lane.
func zmmConst(v uint32) VecVirtual {
	g := GP32()
	MOVL(U32(v), g)
	z := ZMM()
	VPBROADCASTD(g, z)
	return z
}

// bcastByte returns a vector with every byte set to v.
func bcastByte(v uint8, zmm bool) VecVirtual {
	if zmm {
		return zmmConst(uint32(v) * 0x01010101)
	}
	g := GP32()
	MOVL(U32(uint32(v)*0x01010101), g)
	y := YMM()
	VMOVD(g, y.AsX())
	VPBROADCASTD(y.AsX(), y)
	return y
}

// rowKernel emits func(w *byte, stride, nb int, a *byte, out *[8]float32):
// the dot products of 8 weight rows (w, w+stride, …, nb blocks each) with one
// Q8_0 activation row a; lane i of the result is weight row i. AVX2 only:
// |w| × sign(a, w) through VPMADDUBSW (|w| ≤ 128 and |a| ≤ 127, so a pair sum
// ≤ 32512 never saturates) and VPMADDWD, reduced to one int32 per row by a
// VPHADDD tree.
func rowKernel(name string, q4 bool) {
	TEXT(name, NOSPLIT, "func(w *byte, stride, nb int, a *byte, out *[8]float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes out[i] = dot(weight row i, a) for 8 weight rows, bit-identical to the Go dot.", name))
	r := rows{b0: Load(Param("w"), GP64()), stride: Load(Param("stride"), GP64())}
	nb := Load(Param("nb"), GP64())
	ap := Load(Param("a"), GP64())
	r.s3 = GP64()
	LEAQ(Mem{Base: r.stride, Index: r.stride, Scale: 2}, r.s3)
	r.b4 = GP64()
	LEAQ(Mem{Base: r.b0, Index: r.stride, Scale: 4}, r.b4)

	ones := YMM()
	VPCMPEQW(ones, ones, ones)
	VPSRLW(U8(15), ones, ones)
	var mask, eights VecVirtual
	blk := q8Bytes
	if q4 {
		mask, eights = bcastByte(0x0f, false), bcastByte(8, false)
		blk = q4Bytes
	}
	acc := YMM()
	VXORPS(acc, acc, acc)

	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))

	a := YMM()
	VMOVDQU(Mem{Base: ap, Disp: 2}, a)
	// int32 block sums of rows i, i+1 (8 partial lanes each) folded by VPHADDD.
	prod := func(i int) VecVirtual {
		v := YMM()
		if q4 {
			h := XMM()
			VMOVDQU(r.mem(i, 2), v.AsX())
			VPSRLW(U8(4), v.AsX(), h)
			VINSERTI128(U8(1), h, v, v)
			VPAND(mask, v, v)
			VPSUBB(eights, v, v)
		} else {
			VMOVDQU(r.mem(i, 2), v)
		}
		u := YMM()
		VPABSB(v, u)
		VPSIGNB(v, a, v)
		VPMADDUBSW(v, u, v)
		VPMADDWD(ones, v, v)
		return v
	}
	pair := func(i int) VecVirtual {
		x, y := prod(i), prod(i+1)
		VPHADDD(y, x, x)
		return x
	}
	quad := func(i int) VecVirtual {
		x, y := pair(i), pair(i+2)
		VPHADDD(y, x, x)
		return x
	}
	q0, q1 := quad(0), quad(4)
	// q0 = [rows 0-3 lanes 0-3 | rows 0-3 lanes 4-7], q1 likewise rows 4-7.
	lo := YMM()
	VPBLENDD(U8(0xf0), q1, q0, lo)
	VPERM2I128(U8(0x21), q1, q0, q0)
	VPADDD(lo, q0, q0)
	sumf := YMM()
	VCVTDQ2PS(q0, sumf)

	// Weight scales: 8 f16 gathered through two GPRs.
	dw := YMM()
	h := [2]Register{GP64(), GP64()}
	t := GP64()
	for i := range 8 {
		d := h[i/4]
		if i%4 == 0 {
			MOVWQZX(r.mem(i, 0), d)
			continue
		}
		MOVWQZX(r.mem(i, 0), t)
		SHLQ(U8(16*(i%4)), t)
		ORQ(t, d)
	}
	VMOVQ(h[0], dw.AsX())
	VPINSRQ(U8(1), h[1], dw.AsX(), dw.AsX())
	VCVTPH2PS(dw.AsX(), dw)
	da := YMM()
	VPBROADCASTW(Mem{Base: ap}, da.AsX())
	VCVTPH2PS(da.AsX(), da)
	if q4 {
		// acc += float32(float32(sumi)·dw)·da, fused
		VMULPS(dw, sumf, sumf)
		VFMADD231PS(da, sumf, acc)
	} else {
		// acc += float32(sumi)·float32(dw·da), fused
		VMULPS(da, dw, dw)
		VFMADD231PS(dw, sumf, acc)
	}

	ADDQ(U32(blk), r.b0)
	ADDQ(U32(blk), r.b4)
	ADDQ(U32(q8Bytes), ap)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_done")
	out := Load(Param("out"), GP64())
	VMOVUPS(acc, Mem{Base: out})
	VZEROUPPER()
	RET()
}

// vpdpbusd emits VPDPBUSD src2, src1, dst (dst += Σ₄ u8(src1)·s8(src2) per
// dword), which avo v0.5.0 does not know.
func vpdpbusd(s8 Op, u8, dst VecVirtual) {
	Instruction(&ir.Instruction{
		Opcode:   "VPDPBUSD",
		Operands: []Op{s8, u8, dst},
		Inputs:   []Op{s8, u8, dst},
		Outputs:  []Op{dst},
		ISA:      []string{"AVX512_VNNI"},
	})
}
