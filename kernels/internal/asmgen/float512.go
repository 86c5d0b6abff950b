package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// floatTileKernel512 emits func(w *byte, stride, n int, a *float32, astride
// int, out *float32, ostride int) for n a multiple of 16: the defined-order
// dot products of nw weight rows (F16 or F32, stride bytes apart) with na
// float32 activation rows (astride bytes apart); weight row i, activation row
// k goes to out + k·ostride + 4i.
//
// A ZMM holds exactly the 16 lanes of the defined order (lane j sums the
// products of columns j, j+16, … in order, multiply then add, no FMA), so
// every (weight row, activation row) pair has one ZMM accumulator and the
// same float32 operations as the AVX2 kernels and the Go dot, with half the
// instructions; each weight vector is converted once per pass for all na
// activation rows. The final fold is reduce16's.
func floatTileKernel512(f16 bool, nw, na int) {
	t := "F32"
	if f16 {
		t = "F16"
	}
	name := fmt.Sprintf("dot%sx%dx%dAVX512", t, nw, na)
	TEXT(name, NOSPLIT, "func(w *byte, stride, n int, a *float32, astride int, out *float32, ostride int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes the defined-order dot products of %d weight rows with %d activation rows (n a multiple of 16).", name, nw, na))
	es := elemBytes(f16)
	wr := rows{b0: Load(Param("w"), GP64()), stride: Load(Param("stride"), GP64())}
	wr.s3 = GP64()
	LEAQ(Mem{Base: wr.stride, Index: wr.stride, Scale: 2}, wr.s3)
	if nw > 4 {
		wr.b4 = GP64()
		LEAQ(Mem{Base: wr.b0, Index: wr.stride, Scale: 4}, wr.b4)
	}
	n := Load(Param("n"), GP64())
	ar := rows{b0: Load(Param("a"), GP64())}
	if na > 1 {
		ar.stride = Load(Param("astride"), GP64())
	}
	if na > 2 {
		ar.s3 = GP64()
		LEAQ(Mem{Base: ar.stride, Index: ar.stride, Scale: 2}, ar.s3)
	}
	if na > 4 {
		ar.b4 = GP64()
		LEAQ(Mem{Base: ar.b0, Index: ar.stride, Scale: 4}, ar.b4)
	}
	acc := make([][]VecVirtual, nw)
	for i := range acc {
		acc[i] = make([]VecVirtual, na)
		for k := range acc[i] {
			acc[i][k] = ZMM()
			VXORPS(acc[i][k], acc[i][k], acc[i][k])
		}
	}
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	var act VecVirtual
	if na == 1 {
		act = ZMM()
		VMOVUPS(Mem{Base: ar.b0}, act)
	}
	for i := range nw {
		x := ZMM()
		if f16 {
			VCVTPH2PS(wr.mem(i, 0), x)
		} else {
			VMOVUPS(wr.mem(i, 0), x)
		}
		for k := range na {
			p := ZMM()
			if na == 1 {
				VMULPS(act, x, p)
			} else {
				VMULPS(ar.mem(k, 0), x, p)
			}
			VADDPS(p, acc[i][k], acc[i][k])
		}
	}
	if na == 1 {
		// Decode-shaped: prefetch the weight rows (the same line on two
		// or four passes).
		for i := range nw {
			PREFETCHT0(wr.mem(i, 512))
		}
	}
	ADDQ(U32(16*es), wr.b0)
	if nw > 4 {
		ADDQ(U32(16*es), wr.b4)
	}
	ADDQ(U32(64), ar.b0)
	if na > 4 {
		ADDQ(U32(64), ar.b4)
	}
	SUBQ(U32(16), n)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_done")
	out := Load(Param("out"), GP64())
	var ostride Register
	if na > 1 {
		ostride = Load(Param("ostride"), GP64())
	}
	for k := range na {
		for i := range nw {
			hi := YMM()
			VEXTRACTF32X8(U8(1), acc[i][k], hi)
			s := reduce16EVEX(acc[i][k].AsY().(VecVirtual), hi)
			VMOVSS(s, Mem{Base: out, Disp: 4 * i})
		}
		if k+1 < na {
			ADDQ(ostride, out)
		}
	}
	VZEROUPPER()
	RET()
}

// reduce16EVEX is reduce16 with EVEX-encodable instructions only (the
// registers may be X16–X31): the same additions in the same order.
func reduce16EVEX(acc0, acc1 VecVirtual) VecVirtual {
	VADDPS(acc1, acc0, acc0) // j + (j+8)
	h := XMM()
	VEXTRACTF32X4(U8(1), acc0, h)
	VADDPS(h, acc0.AsX(), h) // j + (j+4)
	t := XMM()
	VMOVHLPS(h, h, t)
	VADDPS(t, h, h) // j + (j+2)
	VMOVSHDUP(h, t)
	VADDSS(t, h, h) // 0 + 1
	return h
}
