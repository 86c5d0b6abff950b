package kernels

// PeakKind names a compute-peak loop (see PeakLoop).
type PeakKind int

const (
	// PeakInt8 is the int8 multiply-accumulate peak (VPDPBUSD: u8 × s8 → s32),
	// what the quantized GEMMs use.
	PeakInt8 PeakKind = iota
	// PeakFP32 is the float32 fused multiply-add peak, what the F16/F32 GEMMs
	// use.
	PeakFP32
)

func (k PeakKind) String() string {
	if k == PeakInt8 {
		return "int8"
	}
	return "fp32"
}

// PeakLoop runs iters iterations of kind's register-only loop (independent
// multiply-accumulates on the widest vectors this CPU has, no memory
// traffic) on the calling goroutine and returns the operations it did,
// counting a multiply-add as two. It returns ok false when this build or
// CPU has no such instructions (int8 needs AVX-512 VNNI, fp32 AVX2 with
// FMA). Timing it on every core gives the instruction-bound ceiling a
// GEMM's GFLOP/s is judged against.
func PeakLoop(kind PeakKind, iters int) (ops int64, ok bool) {
	return peakLoop(kind, iters)
}
