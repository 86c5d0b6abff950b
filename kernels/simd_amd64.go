//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// detectSIMD returns the best kernel level this CPU (and OS) supports.
func detectSIMD() simdLevel {
	x := cpu.X86
	if !x.HasAVX2 || !x.HasF16C {
		return simdGo
	}
	if x.HasAVX512F && x.HasAVX512BW && x.HasAVX512DQ && x.HasAVX512VL && x.HasAVX512VNNI {
		return simdAVX512VNNI
	}
	return simdAVX2
}

func rowDotQ8_0x8(q4 bool, w []byte, stride, nb int, a []byte, out *[8]float32) {
	if q4 {
		dotQ4_0x8AVX2(&w[0], stride, nb, &a[0], out)
	} else {
		dotQ8_0x8AVX2(&w[0], stride, nb, &a[0], out)
	}
}

// useGFNI selects the Q4_0 VNNI row kernel that splits nibbles with
// VGF2P8AFFINEQB (tests clear it to cover the other).
var useGFNI = cpu.X86.HasAVX512GFNI

func rowDotQ8_0x16(q4 bool, w []byte, stride, nb int, a []byte, out *[16]float32) {
	switch {
	case q4 && useGFNI:
		dotQ4_0x16GFNI(&w[0], stride, nb, &a[0], out)
	case q4:
		dotQ4_0x16VNNI(&w[0], stride, nb, &a[0], out)
	default:
		dotQ8_0x16VNNI(&w[0], stride, nb, &a[0], out)
	}
}

func gemmQ8_0x8(q4 bool, w []byte, stride, nb int, pk []byte, out *[128]float32) {
	if q4 {
		gemmQ4_0x8VNNI(&w[0], stride, nb, &pk[0], out)
	} else {
		gemmQ8_0x8VNNI(&w[0], stride, nb, &pk[0], out)
	}
}
