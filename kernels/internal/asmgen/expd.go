package main

import (
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Constants of kernels.expd, each stored 4 times for YMM memory operands:
// min, log2 e, ln2 hi, ln2 lo, then 1/k! for k = 13 down to 0.
var expdValues = append([]float64{-708.0, 1.4426950408889634, 6.93147180369123816490e-01, 1.90821492927058770002e-10},
	func() []float64 {
		c := make([]float64, 14)
		f := 1.0
		for k := range 14 {
			if k > 0 {
				f *= float64(k)
			}
			c[13-k] = 1 / f
		}
		return c
	}()...)

// Indexes of expdValues (xd: expd, apart from expf's), shared by both
// kernels' constant tables.
const (
	xdMin = iota
	xdLog2e
	xdLn2Hi
	xdLn2Lo
	xdC13 // then xdC13+1 … xdC13+13 = 1/12! … 1/0!
)

// expSumKernel emits func(w *float64, l *float32, n int, m float32, invT
// float64, sums *[4]float64) for n a multiple of 4: w[i] = expd(float64(l[i]
// − m)·invT), exactly as kernels.expd computes it (the same IEEE operations
// in the same order, FMA3 for math.FMA), and sums[k] = Σ w[4j+k].
func expSumKernel() {
	const name = "expSumF64AVX2"
	TEXT(name, NOSPLIT, "func(w *float64, l *float32, n int, m float32, invT float64, sums *[4]float64)")
	Pragma("noescape")
	Doc(name + " sets w[i] = expd(float64(l[i] − m)·invT) for n (a multiple of 4) elements, bit-identical to kernels.expd, and sums[k] to Σ w[4j+k].")
	tab := GLOBL("expdconsts", RODATA|NOPTR)
	for k, v := range expdValues {
		for l := 0; l < 4; l++ {
			DATA(32*k+8*l, U64(math.Float64bits(v)))
		}
	}
	c := func(i int) Mem { return tab.Offset(32 * i) }
	w := Load(Param("w"), GP64())
	l := Load(Param("l"), GP64())
	n := Load(Param("n"), GP64())
	mx := XMM()
	VBROADCASTSS(Load(Param("m"), XMM()), mx)
	invT := YMM()
	VBROADCASTSD(Load(Param("invT"), XMM()), invT)
	acc := YMM()
	VXORPD(acc, acc, acc)
	// 2^52 + 2^51: adding it to an integral |n| < 2^31 leaves n in the low
	// bits of the sum's bit pattern.
	magic := YMM()
	mg := GP64()
	MOVQ(U64(math.Float64bits(1<<52+1<<51)), mg)
	VMOVQ(mg, magic.AsX())
	VPBROADCASTQ(magic.AsX(), magic)
	bias := YMM()
	MOVQ(U64(1023), mg)
	VMOVQ(mg, bias.AsX())
	VPBROADCASTQ(bias.AsX(), bias)

	// Four vectors per iteration: their polynomial chains (13 dependent
	// FMAs each) overlap, and they are still added to acc one after the
	// other, so lane k sums w[4j+k] in j order as before.
	const unroll = 4
	one := func(off int) VecVirtual {
		xs := XMM()
		VMOVUPS(Mem{Base: l, Disp: 16 * off}, xs)
		VSUBPS(mx, xs, xs) // float32 l − m
		x := YMM()
		VCVTPS2PD(xs, x)
		VMULPD(invT, x, x)
		keep := YMM()
		VCMPPD(U8(0x1d), c(xdMin), x, keep) // x ≥ min, false for NaN (GE_OQ)
		nn := YMM()
		VMULPD(c(xdLog2e), x, nn)
		VROUNDPD(U8(0), nn, nn) // to nearest even
		r := YMM()
		VMOVAPD(x, r)
		VFNMADD231PD(c(xdLn2Hi), nn, r) // r = x − n·ln2hi, fused
		VFNMADD231PD(c(xdLn2Lo), nn, r) // r −= n·ln2lo, fused
		p := YMM()
		VMOVAPD(c(xdC13), p)
		for k := 1; k <= 13; k++ {
			VFMADD213PD(c(xdC13+k), r, p) // p = p·r + 1/(13−k)!
		}
		e := YMM()
		VADDPD(magic, nn, e)
		VPADDQ(bias, e, e)
		VPSLLQ(U8(52), e, e) // 2ⁿ
		VMULPD(e, p, p)
		VANDPD(keep, p, p)
		VMOVUPD(p, Mem{Base: w, Disp: 32 * off})
		return p
	}
	Label(name + "_loop4")
	CMPQ(n, U32(4*unroll))
	JLT(LabelRef(name + "_loop"))
	var ps [unroll]VecVirtual
	for j := range ps {
		ps[j] = one(j)
	}
	for _, p := range ps {
		VADDPD(p, acc, acc)
	}
	ADDQ(U32(32*unroll), w)
	ADDQ(U32(16*unroll), l)
	SUBQ(U32(4*unroll), n)
	JMP(LabelRef(name + "_loop4"))

	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	VADDPD(one(0), acc, acc)
	ADDQ(U32(32), w)
	ADDQ(U32(16), l)
	SUBQ(U32(4), n)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_done")
	sums := Load(Param("sums"), GP64())
	VMOVUPD(acc, Mem{Base: sums})
	VZEROUPPER()
	RET()
}

// expSumKernel512 emits expSumF64AVX512: expSumKernel's function on
// AVX-512, eight weights a ZMM. Every lane performs the same IEEE
// operations in the same order as the AVX2 kernel and kernels.expd
// (VRNDSCALEPD 0 rounds to nearest even as VROUNDPD 0 does; the x ≥ min
// test zeroes through a mask instead of an AND), and the sums keep its
// order: each ZMM's low four weights, then its high four, are added to
// the YMM accumulator in turn, so lane k still sums w[4j+k] in j order.
// A last group of four takes the AVX2 kernel's YMM steps. The results are
// bit-identical to expSumF64AVX2's.
func expSumKernel512() {
	const name = "expSumF64AVX512"
	TEXT(name, NOSPLIT, "func(w *float64, l *float32, n int, m float32, invT float64, sums *[4]float64)")
	Pragma("noescape")
	Doc(name + " is expSumF64AVX2 on AVX-512 (n a multiple of 4), bit-identical to it.")
	tab := GLOBL("expdconsts512", RODATA|NOPTR)
	for k, v := range expdValues {
		DATA(8*k, U64(math.Float64bits(v)))
	}
	c := func(i int) Mem { return tab.Offset(8 * i) } // one float64, broadcast
	w := Load(Param("w"), GP64())
	l := Load(Param("l"), GP64())
	n := Load(Param("n"), GP64())
	mx := ZMM()
	VBROADCASTSS(Load(Param("m"), XMM()), mx)
	invT := ZMM()
	VBROADCASTSD(Load(Param("invT"), XMM()), invT)
	acc := YMM()
	VXORPD(acc, acc, acc)
	magic, bias := ZMM(), ZMM()
	mg := GP64()
	MOVQ(U64(math.Float64bits(1<<52+1<<51)), mg)
	VMOVQ(mg, magic.AsX())
	VPBROADCASTQ(magic.AsX(), magic)
	MOVQ(U64(1023), mg)
	VMOVQ(mg, bias.AsX())
	VPBROADCASTQ(bias.AsX(), bias)

	// one computes the weights of the 8 (zmm) or 4 logits at l+off and
	// stores them at w+2·off.
	one := func(off int, zmm bool) VecVirtual {
		var xs, x, nn, r, p, e VecVirtual
		if zmm {
			xs, x, nn, r, p, e = YMM(), ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
		} else {
			xs, x, nn, r, p, e = XMM(), YMM(), YMM(), YMM(), YMM(), YMM()
		}
		var m, it, mg, b Op = mx.AsY(), invT, magic, bias
		if !zmm {
			m, it, mg, b = mx.AsX(), invT.AsY(), magic.AsY(), bias.AsY()
		}
		VMOVUPS(Mem{Base: l, Disp: off}, xs)
		VSUBPS(m, xs, xs) // float32 l − m
		VCVTPS2PD(xs, x)
		VMULPD(it, x, x)
		keep := K()
		VCMPPD_BCST(U8(0x1d), c(xdMin), x, keep) // x ≥ min, false for NaN (GE_OQ)
		VMULPD_BCST(c(xdLog2e), x, nn)
		VRNDSCALEPD(U8(0), nn, nn) // to nearest even
		VMOVAPD(x, r)
		VFNMADD231PD_BCST(c(xdLn2Hi), nn, r) // r = x − n·ln2hi, fused
		VFNMADD231PD_BCST(c(xdLn2Lo), nn, r) // r −= n·ln2lo, fused
		VBROADCASTSD(c(xdC13), p)
		for k := 1; k <= 13; k++ {
			VFMADD213PD_BCST(c(xdC13+k), r, p) // p = p·r + 1/(13−k)!
		}
		VADDPD(mg, nn, e)
		VPADDQ(b, e, e)
		VPSLLQ(U8(52), e, e) // 2ⁿ
		VMULPD(e, p, p)
		VMOVAPD_Z(p, keep, p)
		VMOVUPD(p, Mem{Base: w, Disp: 2 * off})
		return p
	}
	const unroll = 4
	Label(name + "_loop")
	CMPQ(n, U32(8*unroll))
	JLT(LabelRef(name + "_eight"))
	var ps [unroll]VecVirtual
	for j := range ps {
		ps[j] = one(32*j, true)
	}
	for _, p := range ps {
		hi := YMM()
		VEXTRACTF64X4(U8(1), p, hi)
		VADDPD(p.AsY(), acc, acc)
		VADDPD(hi, acc, acc)
	}
	ADDQ(U32(64*unroll), w)
	ADDQ(U32(32*unroll), l)
	SUBQ(U32(8*unroll), n)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_eight")
	CMPQ(n, U32(8))
	JLT(LabelRef(name + "_four"))
	p := one(0, true)
	hi := YMM()
	VEXTRACTF64X4(U8(1), p, hi)
	VADDPD(p.AsY(), acc, acc)
	VADDPD(hi, acc, acc)
	ADDQ(U32(64), w)
	ADDQ(U32(32), l)
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "_eight"))

	Label(name + "_four")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	VADDPD(one(0, false), acc, acc)

	Label(name + "_done")
	sums := Load(Param("sums"), GP64())
	VMOVUPD(acc, Mem{Base: sums})
	VZEROUPPER()
	RET()
}
