package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
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
