package main

import (
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// maxF32Kernel emits func(x *float32, n int) float32 for n a multiple of
// 32: the largest of x[0..n), NaN ignored, −Inf when every value is NaN or
// −Inf. VMAXPS returns its second source when either is NaN, and each
// accumulator is that operand, so a NaN never replaces it; four
// accumulators keep the compares independent.
func maxF32Kernel() {
	const name = "maxF32AVX2"
	TEXT(name, NOSPLIT, "func(x *float32, n int) float32")
	Pragma("noescape")
	Doc(name + " returns the largest of n (a multiple of 32) float32 values, NaN ignored.")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	ninf := GP32()
	MOVL(U32(math.Float32bits(float32(math.Inf(-1)))), ninf)
	var acc [4]VecVirtual
	for i := range acc {
		acc[i] = YMM()
	}
	VMOVD(ninf, acc[0].AsX())
	VBROADCASTSS(acc[0].AsX(), acc[0])
	for i := 1; i < len(acc); i++ {
		VMOVAPS(acc[0], acc[i])
	}
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	for i := range acc {
		// Go order: VMAXPS src2, src1, dst is dst = max(src1, src2), src2
		// when either is NaN: the accumulator must be src2.
		v := YMM()
		VMOVUPS(Mem{Base: x, Disp: 32 * i}, v)
		VMAXPS(acc[i], v, acc[i])
	}
	ADDQ(U32(128), x)
	SUBQ(U32(32), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	// The accumulators hold no NaN, so the order of the reduction does
	// not matter.
	VMAXPS(acc[1], acc[0], acc[0])
	VMAXPS(acc[3], acc[2], acc[2])
	VMAXPS(acc[2], acc[0], acc[0])
	h := XMM()
	VEXTRACTF128(U8(1), acc[0], h)
	VMAXPS(h, acc[0].AsX(), h)
	t := XMM()
	VMOVHLPS(h, h, t)
	VMAXPS(t, h, h)
	VMOVSHDUP(h, t)
	VMAXSS(t, h, h)
	Store(h, ReturnIndex(0))
	VZEROUPPER()
	RET()
}
