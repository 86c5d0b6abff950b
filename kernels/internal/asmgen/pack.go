package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// packRowKernel emits func(a *byte, nb int, dst *byte, step int): packRowVNNI
// for nb Q8_0 blocks of a, block b to dst + b·step: the 32 quants, the
// f16 scale as float32, and 128·Σq, 8·Σq, −128·Σq, −8·Σq as int32. Σq comes
// from VPSADBW over the quants offset to unsigned (Σ(q+128) − 32·128).
func packRowKernel() {
	const name = "packRowVNNIAVX512"
	TEXT(name, NOSPLIT, "func(a *byte, nb int, dst *byte, step int)")
	Pragma("noescape")
	Doc(name + " packs nb Q8_0 blocks into the VNNI row kernels' activation layout, as packRowVNNIGo.")
	a := Load(Param("a"), GP64())
	nb := Load(Param("nb"), GP64())
	dst := Load(Param("dst"), GP64())
	step := Load(Param("step"), GP64())
	c80 := bcastByte(0x80, false)
	zero := YMM()
	VPXOR(zero, zero, zero)

	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	q := YMM()
	VMOVDQU(Mem{Base: a, Disp: 2}, q)
	VMOVDQU(q, Mem{Base: dst})
	u := YMM()
	VPXOR(c80, q, u)
	VPSADBW(zero, u, u) // four qword sums of eight bytes
	hi := XMM()
	VEXTRACTI128(U8(1), u, hi)
	VPADDQ(hi, u.AsX(), hi)
	sh := XMM()
	VPSHUFD(U8(0x4e), hi, sh) // swap qwords
	VPADDQ(sh, hi, hi)
	sum := GP64()
	VMOVQ(hi, sum)
	SUBQ(U32(32*128), sum) // Σq
	h := GP32()
	MOVWLZX(Mem{Base: a}, h)
	sx := XMM()
	VMOVD(h, sx)
	VCVTPH2PS(sx, sx)
	VMOVSS(sx, Mem{Base: dst, Disp: 32})
	t := GP64()
	MOVQ(sum, t)
	SHLQ(U8(7), t)
	MOVL(t.As32(), Mem{Base: dst, Disp: 36}) // 128·Σq
	NEGQ(t)
	MOVL(t.As32(), Mem{Base: dst, Disp: 44}) // −128·Σq
	SHLQ(U8(3), sum)
	MOVL(sum.As32(), Mem{Base: dst, Disp: 40}) // 8·Σq
	NEGQ(sum)
	MOVL(sum.As32(), Mem{Base: dst, Disp: 48}) // −8·Σq
	ADDQ(U32(q8Bytes), a)
	ADDQ(step, dst)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// quantPackKernel emits func(src *float32, nb int, dst *byte, step int):
// quantQ8Kernel and packRowKernel in one pass on AVX-512, for the VNNI
// kernels' activation rows. Each block of 32 values is quantized exactly as
// quantQ8_0 does (amax, d = amax/127 stored through F16, id = 1/d or 0,
// q = round-half-away(x·id)) and written straight in the raBlock layout at
// dst + b·step: the 32 quants, d as float32 (its F16 rounding), then
// 128·Σq, 8·Σq, −128·Σq and −8·Σq, as packRowVNNIGo lays out a Q8_0 block.
// Bytes 52–63 of each packed block are not written.
func quantPackKernel() {
	const name = "quantPackQ8_0AVX512"
	TEXT(name, NOSPLIT, "func(src *float32, nb int, dst *byte, step int)")
	Pragma("noescape")
	Doc(name + " quantizes nb blocks of 32 float32 to Q8_0 and packs them in the VNNI activation layout, as quantQ8_0 then packRowVNNIGo.")
	src := Load(Param("src"), GP64())
	nb := Load(Param("nb"), GP64())
	dst := Load(Param("dst"), GP64())
	step := Load(Param("step"), GP64())

	absMask := zmmConst(0x7fffffff)
	signMask := zmmConst(0x80000000)
	one := zmmConst(0x3f800000)
	half := zmmConst(0x3f000000)
	c127 := f32Const(0x42fe0000).AsX()
	oneX := f32Const(0x3f800000).AsX()

	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	x0, x1 := ZMM(), ZMM()
	VMOVUPS(Mem{Base: src}, x0)
	VMOVUPS(Mem{Base: src, Disp: 64}, x1)
	// amax over the block in quantQ8_0AVX2's order (eight values at a
	// time, then halves), so that a NaN among them gives the same result:
	// MAXPS returns its second operand when either is NaN.
	m0, m1 := YMM(), YMM()
	VANDPS(absMask.AsY(), x0.AsY(), m0)
	VEXTRACTF64X4(U8(1), x0, m1)
	VANDPS(absMask.AsY(), m1, m1)
	VMAXPS(m1, m0, m0)
	VANDPS(absMask.AsY(), x1.AsY(), m1)
	VMAXPS(m1, m0, m0)
	VEXTRACTF64X4(U8(1), x1, m1)
	VANDPS(absMask.AsY(), m1, m1)
	VMAXPS(m1, m0, m0)
	dv, idv := q8Scale(m0, c127, oneX)
	// The scale as the kernels read it: d rounded to F16, back to float32.
	hb := XMM()
	VCVTPS2PH(U8(0), dv, hb)
	VCVTPH2PS(hb, hb)
	VMOVSS(hb, Mem{Base: dst, Disp: 32})
	id := ZMM()
	VBROADCASTSS(idv, id)

	var q [2]VecVirtual
	for i, v := range []VecVirtual{x0, x1} {
		VMULPS(id, v, v)
		tr := ZMM()
		VRNDSCALEPS(U8(3), v, tr) // trunc
		f := ZMM()
		VSUBPS(tr, v, f)
		VPANDD(absMask, f, f)
		k := K()
		VCMPPS(U8(13), half, f, k) // |v−t| ≥ 0.5
		s := ZMM()
		VPANDD(signMask, v, s)
		VPORD(one, s, s) // ±1
		VADDPS(s, tr, k, tr)
		q[i] = ZMM()
		VCVTTPS2DQ(tr, q[i])
	}
	// The quants, narrowed to bytes with saturation as quantQ8_0AVX2's
	// packs do (a NaN's INT_MIN becomes −128), and Σq over those bytes.
	b0, b1 := XMM(), XMM()
	VPMOVSDB(q[0], b0)
	VPMOVSDB(q[1], b1)
	VMOVDQU(b0, Mem{Base: dst})
	VMOVDQU(b1, Mem{Base: dst, Disp: 16})
	VPMOVSXBD(b0, q[0])
	VPMOVSXBD(b1, q[1])
	sum := ZMM()
	VPADDD(q[1], q[0], sum)
	sy := YMM()
	VEXTRACTI64X4(U8(1), sum, sy)
	VPADDD(sy, sum.AsY(), sy)
	sx := XMM()
	VEXTRACTI128(U8(1), sy, sx)
	VPADDD(sx, sy.AsX(), sx)
	st := XMM()
	VPSHUFD(U8(0x4e), sx, st)
	VPADDD(st, sx, sx)
	VPSHUFD(U8(0xb1), sx, st)
	VPADDD(st, sx, sx)
	s32 := GP32()
	VMOVD(sx, s32)
	tq := GP32()
	MOVL(s32, tq)
	SHLL(U8(7), tq)
	MOVL(tq, Mem{Base: dst, Disp: 36}) // 128·Σq
	NEGL(tq)
	MOVL(tq, Mem{Base: dst, Disp: 44}) // −128·Σq
	SHLL(U8(3), s32)
	MOVL(s32, Mem{Base: dst, Disp: 40}) // 8·Σq
	NEGL(s32)
	MOVL(s32, Mem{Base: dst, Disp: 48}) // −8·Σq

	ADDQ(U32(128), src)
	ADDQ(step, dst)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}
