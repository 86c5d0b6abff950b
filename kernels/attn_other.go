//go:build !amd64 || purego

package kernels

const noSIMD = "kernels: no SIMD kernels in this build"

func dotF32SIMD(a, b []float32) float32                                                { panic(noSIMD) }
func axpyF32SIMD(dst []float32, a float32, x []float32)                                { panic(noSIMD) }
func scaleF32SIMD(dst, x []float32, s float32)                                         { panic(noSIMD) }
func scaleMulF32SIMD(dst, x, w []float32, s float32)                                   { panic(noSIMD) }
func f16ToF32SIMD(dst []float32, src []uint16)                                         { panic(noSIMD) }
func attnScoresF32SIMD(scores, q []float32, heads, hd int, k []float32, stride, n int) { panic(noSIMD) }
func attnScoresF16SIMD(scores, q []float32, heads, hd int, k []uint16, stride, n int)  { panic(noSIMD) }
func attnAccumF32SIMD(out, p []float32, heads, hd int, v []float32, stride, n int)     { panic(noSIMD) }
func attnAccumF16SIMD(out, p []float32, heads, hd int, v []uint16, stride, n int)      { panic(noSIMD) }
func quantQ8_0SIMD(src []float32, dst []byte)                                          { panic(noSIMD) }

func dotFloatx4(f16 bool, w []byte, stride, n int, a []float32, out *[4]float32) { panic(noSIMD) }

func roundF16SIMD(x []float32) { panic(noSIMD) }

func dotFloatx1x6(f16 bool, w []byte, n int, a []float32, astride int, out *[6]float32) {
	panic(noSIMD)
}

func swigluSIMD(dst, gate, up []float32) { panic(noSIMD) }

func expSubSIMD(x []float32, m float32) float64 { panic(noSIMD) }

func expSumF64SIMD([]float64, []float32, float32, float64, *[4]float64) { panic(noSIMD) }

func maxF32SIMD([]float32) float32 { panic(noSIMD) }

func f32ToF16SIMD([]uint16, []float32) { panic(noSIMD) }
