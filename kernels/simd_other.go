//go:build !amd64 || purego

package kernels

import "unsafe"

func detectSIMD() simdLevel { return simdGo }

var useGFNI bool

var useFMA bool

func rowDotQ8_0x8(bool, []byte, int, int, []byte, *[8]float32) {
	panic("kernels: no SIMD kernels in this build")
}

func rowDotQ8_0x16(bool, []byte, int, int, []byte, *[16]float32) {
	panic("kernels: no SIMD kernels in this build")
}

func rowDotQ8_0x16xN(bool, int, []byte, int, int, []byte, int, []float32, int) {
	panic("kernels: no SIMD kernels in this build")
}

func packTile16(bool, []byte, int, int, []byte, []byte) {
	panic("kernels: no SIMD kernels in this build")
}

func rowDotTiled16xN(bool, int, []byte, []byte, int, []byte, int, []float32, int) {
	panic("kernels: no SIMD kernels in this build")
}

func dotFloat4xN(bool, int, []byte, int, int, []float32, int, []float32, int) {
	panic("kernels: no SIMD kernels in this build")
}

func dotFloat8x1(bool, []byte, int, int, []float32, []float32) {
	panic("kernels: no SIMD kernels in this build")
}

func peakLoop(PeakKind, int) (int64, bool) { return 0, false }

func packRowSIMD(a []byte, nb int, dst []byte, step int) { packRowVNNIGo(a[:nb*q8_0Bytes], dst, step) }

func quantPackRowSIMD(x []float32, nb int, dst []byte, step int) { quantPackRowGo(x, dst, step) }

func prefetchRowsSIMD(unsafe.Pointer, int, int, int) {}
