package main

import (
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The constants of kernels.expf, in the order of expfConsts below; each is
// stored 8 times so that an AVX2 instruction can read it as a memory
// operand (16 YMM registers cannot hold them all beside the working set).
var expfValues = []float32{
	-104,                // min
	89,                  // max
	1.44269504088896341, // log2 e
	0.693359375,         // ln2 hi
	-2.12194440e-4,      // ln2 lo
	1.9875691500e-4,     // p0
	1.3981999507e-3,     // p1
	8.3334519073e-3,     // p2
	4.1665795894e-2,     // p3
	1.6666665459e-1,     // p4
	5.0000001201e-1,     // p5
	1.0,                 // one
}

const (
	cMin = iota
	cMax
	cLog2e
	cLn2Hi
	cLn2Lo
	cP0
	cP1
	cP2
	cP3
	cP4
	cP5
	cOne
)

// expfTable emits the constant table once and returns its memory operand
// maker.
var expfTableMem Mem
var expfTableDone bool

func expfConst(i int) Mem {
	if !expfTableDone {
		expfTableMem = GLOBL("expfconsts", RODATA|NOPTR)
		for k, v := range expfValues {
			for l := 0; l < 8; l++ {
				DATA(32*k+4*l, U32(math.Float32bits(v)))
			}
		}
		expfTableDone = true
	}
	return expfTableMem.Offset(32 * i)
}

// expfAVX2 computes e = expf(x) for 8 lanes exactly as kernels.expf does:
// every step is one rounded float32 operation (VMULPS, VADDPS, VSUBPS; no
// FMA), round to nearest even with VROUNDPS, 2ⁿ assembled in the exponent
// bits. x is not modified.
func expfAVX2(x VecVirtual) VecVirtual { return expfVec(x, false) }

// expf512 is expfAVX2 on sixteen lanes: the same rounded operations in
// the same order (constants read as 4-byte broadcasts of the table's
// first copy, VRNDSCALEPS for VROUNDPS), so every lane gives expfAVX2's
// bits.
func expf512(x VecVirtual) VecVirtual { return expfVec(x, true) }

// expfVec emits expfAVX2 (wide false, YMM) or expf512 (wide true, ZMM).
func expfVec(x VecVirtual, wide bool) VecVirtual {
	vec := YMM
	if wide {
		vec = ZMM
	}
	c := func(i int) Mem { return expfConst(i) }
	// load, mul and add take a constant of the table: a whole YMM of
	// copies, or one broadcast to the ZMM's lanes.
	load := func(k int, dst VecVirtual) {
		if wide {
			VBROADCASTSS(c(k), dst)
		} else {
			VMOVUPS(c(k), dst)
		}
	}
	mul := func(k int, src, dst VecVirtual) {
		if wide {
			VMULPS_BCST(c(k), src, dst)
		} else {
			VMULPS(c(k), src, dst)
		}
	}
	add := func(k int, src, dst VecVirtual) {
		if wide {
			VADDPS_BCST(c(k), src, dst)
		} else {
			VADDPS(c(k), src, dst)
		}
	}
	// Clamp with x as the second source, which VMAXPS/VMINPS return when
	// either is NaN: a NaN goes through (to a NaN result), as in Go's min
	// and max, instead of becoming the clamp bound.
	lo, hi := vec(), vec()
	load(cMin, lo)
	load(cMax, hi)
	v := vec()
	VMAXPS(x, lo, v)
	VMINPS(v, hi, v)
	n := vec()
	mul(cLog2e, v, n)
	if wide {
		VRNDSCALEPS(U8(0), n, n) // to nearest even
	} else {
		VROUNDPS(U8(0), n, n) // to nearest even
	}
	t := vec()
	mul(cLn2Hi, n, t)
	r := vec()
	VSUBPS(t, v, r) // r = v − n·ln2hi
	mul(cLn2Lo, n, t)
	VSUBPS(t, r, r) // r −= n·ln2lo
	r2 := vec()
	VMULPS(r, r, r2)
	p := vec()
	mul(cP0, r, p)
	add(cP1, p, p)
	for _, k := range []int{cP2, cP3, cP4, cP5} {
		VMULPS(r, p, p)
		add(k, p, p)
	}
	VMULPS(r2, p, p)
	VADDPS(r, p, p)
	add(cOne, p, p)
	// p·2ⁿ = (p·2^a)·2^b with a = n>>1, b = n − a: 2^k is (k + 127) << 23
	// as float bits, and both halves are normal.
	ni := vec()
	VCVTPS2DQ(n, ni) // exact: n is integral
	bias := vec()
	if wide {
		VPTERNLOGD(U8(0xff), bias, bias, bias) // all ones
	} else {
		VPCMPEQD(bias, bias, bias)
	}
	VPSRLD(U8(25), bias, bias) // 127
	ha := vec()
	VPSRAD(U8(1), ni, ha) // a
	VPSUBD(ha, ni, ni)    // b
	VPADDD(bias, ha, ha)
	VPSLLD(U8(23), ha, ha)
	VPADDD(bias, ni, ni)
	VPSLLD(U8(23), ni, ni)
	VMULPS(ha, p, p)
	VMULPS(ni, p, p)
	return p
}

// swigluKernel emits swigluAVX2, func(dst, gate, up *float32, n int) for n
// a multiple of 8, or with wide swigluAVX512 for n a multiple of 16 (the
// same rounded operations in the same order, so the same values):
// dst[i] = SiLU(gate[i])·up[i] = gate[i] / (1 + expf(−gate[i])) · up[i],
// bit-identical to swigluGo.
func swigluKernel(wide bool) {
	name, vec, lanes := "swigluAVX2", YMM, 8
	doc := " sets dst[i] = SiLU(gate[i])·up[i] for n (a multiple of 8) elements, bit-identical to swigluGo."
	if wide {
		name, vec, lanes = "swigluAVX512", ZMM, 16
		doc = " is swigluAVX2 for n a multiple of 16: the same values."
	}
	TEXT(name, NOSPLIT, "func(dst, gate, up *float32, n int)")
	Pragma("noescape")
	Doc(name + doc)
	dst := Load(Param("dst"), GP64())
	gate := Load(Param("gate"), GP64())
	up := Load(Param("up"), GP64())
	n := Load(Param("n"), GP64())
	var sign VecVirtual
	if wide {
		sign = ZMM()
		VPTERNLOGD(U8(0xff), sign, sign, sign)
		VPSLLD(U8(31), sign, sign)
	}
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	g := vec()
	VMOVUPS(Mem{Base: gate}, g)
	neg := vec()
	if wide {
		VXORPS(g, sign, neg) // −g
	} else {
		VPCMPEQD(neg, neg, neg)
		VPSLLD(U8(31), neg, neg) // sign bit
		VXORPS(g, neg, neg)      // −g
	}
	e := expfVec(neg, wide)
	if wide {
		VADDPS_BCST(expfConst(cOne), e, e) // 1 + expf(−g)
	} else {
		VADDPS(expfConst(cOne), e, e) // 1 + expf(−g)
	}
	s := vec()
	VDIVPS(e, g, s) // g / (1 + expf(−g))
	VMULPS(Mem{Base: up}, s, s)
	VMOVUPS(s, Mem{Base: dst})
	ADDQ(U32(4*lanes), dst)
	ADDQ(U32(4*lanes), gate)
	ADDQ(U32(4*lanes), up)
	SUBQ(U32(lanes), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// expSubKernel emits func(x *float32, m float32, n int) float64 for n a multiple of
// 8: x[i] = expf(x[i] − m) and their sum, as kernels.expSumSubGo (softmax).
func expSubKernel() {
	const name = "expSubAVX2"
	TEXT(name, NOSPLIT, "func(x *float32, m float32, n int) float64")
	Pragma("noescape")
	Doc(name + " sets x[i] = expf(x[i] − m) for n (a multiple of 8) elements and returns their sum, both bit-identical to expSumSubGo.")
	x := Load(Param("x"), GP64())
	mx := YMM()
	VBROADCASTSS(Load(Param("m"), XMM()), mx)
	n := Load(Param("n"), GP64())
	sum := XMM()
	VXORPD(sum, sum, sum)
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	v := YMM()
	VMOVUPS(Mem{Base: x}, v)
	VSUBPS(mx, v, v)
	e := expfAVX2(v)
	VMOVUPS(e, Mem{Base: x})
	// The eight values' float32 sum as ggml's AVX2 softmax forms it,
	// ((e0+e4)+(e2+e6)) + ((e1+e5)+(e3+e7)), added to the float64 sum.
	h := XMM()
	VEXTRACTF128(U8(1), e, h)
	VADDPS(e.AsX(), h, h) // lane i: e[i+4] + e[i]
	t := XMM()
	VMOVHLPS(h, h, t)
	VADDPS(t, h, h) // lane i < 2: (e[i+4]+e[i]) + (e[i+6]+e[i+2])
	VMOVSHDUP(h, t)
	VADDSS(t, h, h)
	VCVTSS2SD(h, h, h)
	VADDSD(h, sum, sum)
	ADDQ(U32(32), x)
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	Store(sum, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// expSub512Kernel emits expSubAVX512, expSubAVX2 on sixteen values a step
// for n a multiple of 16: each group of eight is summed in float32 by
// expSubAVX2's tree and added to the float64 sum in order.
func expSub512Kernel() {
	const name = "expSubAVX512"
	TEXT(name, NOSPLIT, "func(x *float32, m float32, n int) float64")
	Pragma("noescape")
	Doc(name + " is expSubAVX2 for n a multiple of 16: the same values and the same sum.")
	x := Load(Param("x"), GP64())
	mx := ZMM()
	VBROADCASTSS(Load(Param("m"), XMM()), mx)
	n := Load(Param("n"), GP64())
	sum := XMM()
	VXORPD(sum, sum, sum)
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	v := ZMM()
	VMOVUPS(Mem{Base: x}, v)
	VSUBPS(mx, v, v)
	e := expf512(v)
	VMOVUPS(e, Mem{Base: x})
	// Within each group of eight (each 256-bit half): lane i of the
	// group's low four gets e[i]+e[i+4], then lanes 0 and 1 add lanes 2
	// and 3, then lane 0 adds lane 1: ((e0+e4)+(e2+e6)) + ((e1+e5)+(e3+e7)).
	h := ZMM()
	VSHUFF32X4(U8(0xb1), e, e, h) // 128-bit lanes 1, 0, 3, 2
	VADDPS(e, h, h)
	t := ZMM()
	VPERMILPS(U8(0xee), h, t) // lanes 2, 3, 2, 3 of each 128 bits
	VADDPS(t, h, h)
	VMOVSHDUP(h, t)
	VADDPS(t, h, h)
	g1 := XMM()
	VEXTRACTF32X4(U8(2), h, g1)
	lo := XMM()
	VCVTSS2SD(h.AsX(), lo, lo)
	VADDSD(lo, sum, sum)
	VCVTSS2SD(g1, g1, g1)
	VADDSD(g1, sum, sum)
	ADDQ(U32(64), x)
	SUBQ(U32(16), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	Store(sum, ReturnIndex(0))
	VZEROUPPER()
	RET()
}
