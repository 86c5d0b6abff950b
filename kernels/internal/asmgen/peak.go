package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// peakAccs is the number of independent accumulators of the peak loops:
// enough to cover the latency of VPDPBUSD / VFMADD231PS (4–5 cycles) on
// two ports.
const peakAccs = 10

// peakKernel emits func(n int): n iterations of peakAccs independent
// register-only multiply-accumulates (VPDPBUSD on ZMM for int8, VFMADD231PS
// on ZMM or YMM for float32) with no memory traffic: the instruction-bound
// ceiling a GEMM is judged against.
func peakKernel(name string, int8 bool, zmm bool) {
	TEXT(name, NOSPLIT, "func(n int)")
	Doc(name + " runs n iterations of independent multiply-accumulates (compute peak).")
	n := Load(Param("n"), GP64())
	vec := func() VecVirtual {
		if zmm {
			return ZMM()
		}
		return YMM()
	}
	zero := func(v VecVirtual) {
		if zmm {
			VPXORD(v, v, v)
		} else {
			VPXOR(v, v, v)
		}
	}
	a, b := vec(), vec()
	zero(a)
	zero(b)
	var acc [peakAccs]VecVirtual
	for i := range acc {
		acc[i] = vec()
		zero(acc[i])
	}
	Label(name + "_loop")
	for i := range acc {
		if int8 {
			vpdpbusd(a, b, acc[i])
		} else {
			VFMADD231PS(a, b, acc[i])
		}
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	// Keep the accumulators live to the end.
	for i := 1; i < peakAccs; i++ {
		VPADDD(acc[i], acc[0], acc[0])
	}
	VZEROUPPER()
	RET()
}
