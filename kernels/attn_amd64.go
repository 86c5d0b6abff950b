//go:build amd64 && !purego

package kernels

import "unsafe"

// Callers check lengths; slices here are non-empty and shaped as the kernels
// require (see attn.go).

func dotF32SIMD(a, b []float32) float32 { return dotF32x16AVX2(&a[0], &b[0], len(a)) }

func axpyF32SIMD(dst []float32, a float32, x []float32) { axpyF32x8AVX2(&dst[0], a, &x[0], len(dst)) }

func scaleF32SIMD(dst, x []float32, s float32) { scaleF32x8AVX2(&dst[0], &x[0], s, len(dst)) }

func scaleMulF32SIMD(dst, x, w []float32, s float32) {
	scaleMulF32x8AVX2(&dst[0], &x[0], &w[0], s, len(dst))
}

func f16ToF32SIMD(dst []float32, src []uint16) { f16ToF32x8AVX2(&dst[0], &src[0], len(src)) }

func attnScoresF32SIMD(scores, q []float32, heads, hd int, k []float32, stride, n int) {
	if useSIMD >= simdAVX512VNNI && hd%16 == 0 && hd <= 128 {
		attnScores512F32[hd/16-1](&scores[0], &q[0], heads, &k[0], stride, n)
		return
	}
	attnScoresF32AVX2(&scores[0], &q[0], heads, hd, &k[0], stride, n)
}

func attnScoresF16SIMD(scores, q []float32, heads, hd int, k []uint16, stride, n int) {
	if useSIMD >= simdAVX512VNNI && hd%16 == 0 && hd <= 128 {
		attnScores512F16[hd/16-1](&scores[0], &q[0], heads, &k[0], stride, n)
		return
	}
	attnScoresF16AVX2(&scores[0], &q[0], heads, hd, &k[0], stride, n)
}

// attnScores512F32[nc-1] and attnScores512F16[nc-1] compute scores for
// head size 16·nc with AVX-512.
var (
	attnScores512F32 = [8]func(scores, q *float32, heads int, k *float32, stride, n int){attnScoresF32x1AVX512, attnScoresF32x2AVX512, attnScoresF32x3AVX512, attnScoresF32x4AVX512, attnScoresF32x5AVX512, attnScoresF32x6AVX512, attnScoresF32x7AVX512, attnScoresF32x8AVX512}
	attnScores512F16 = [8]func(scores, q *float32, heads int, k *uint16, stride, n int){attnScoresF16x1AVX512, attnScoresF16x2AVX512, attnScoresF16x3AVX512, attnScoresF16x4AVX512, attnScoresF16x5AVX512, attnScoresF16x6AVX512, attnScoresF16x7AVX512, attnScoresF16x8AVX512}
)

// attnAccum512F32[nv-1] and attnAccum512F16[nv-1] accumulate 16·nv
// columns of one head with AVX-512, the outputs held in registers.
var (
	attnAccum512F32 = [8]func(out, p *float32, v *float32, stride, n int){attnAccumF32x1AVX512, attnAccumF32x2AVX512, attnAccumF32x3AVX512, attnAccumF32x4AVX512, attnAccumF32x5AVX512, attnAccumF32x6AVX512, attnAccumF32x7AVX512, attnAccumF32x8AVX512}
	attnAccum512F16 = [8]func(out, p *float32, v *uint16, stride, n int){attnAccumF16x1AVX512, attnAccumF16x2AVX512, attnAccumF16x3AVX512, attnAccumF16x4AVX512, attnAccumF16x5AVX512, attnAccumF16x6AVX512, attnAccumF16x7AVX512, attnAccumF16x8AVX512}
)

func attnAccumF32SIMD(out, p []float32, heads, hd int, v []float32, stride, n int) {
	if useSIMD >= simdAVX512VNNI && hd%16 == 0 {
		for h := range heads {
			for d := 0; d < hd; d += 128 {
				nv := min(8, (hd-d)/16)
				attnAccum512F32[nv-1](&out[h*hd+d], &p[h*n], &v[d], stride, n)
			}
		}
		return
	}
	attnAccumF32AVX2(&out[0], &p[0], heads, hd, &v[0], stride, n)
}

func attnAccumF16SIMD(out, p []float32, heads, hd int, v []uint16, stride, n int) {
	if useSIMD >= simdAVX512VNNI && hd%16 == 0 {
		for h := range heads {
			for d := 0; d < hd; d += 128 {
				nv := min(8, (hd-d)/16)
				attnAccum512F16[nv-1](&out[h*hd+d], &p[h*n], &v[d], stride, n)
			}
		}
		return
	}
	attnAccumF16AVX2(&out[0], &p[0], heads, hd, &v[0], stride, n)
}

func quantQ8_0SIMD(src []float32, dst []byte) { quantQ8_0AVX2(&src[0], &dst[0], len(src)/QK) }

func dotFloatx4(f16 bool, w []byte, stride, n int, a []float32, out *[4]float32) {
	if f16 {
		dotF16x4AVX2(&w[0], stride, n, &a[0], out)
	} else {
		dotF32x4AVX2(&w[0], stride, n, &a[0], out)
	}
}

func roundF16SIMD(x []float32) { roundF16x8AVX2(&x[0], len(x)) }

func dotFloatx1x6(f16 bool, w []byte, n int, a []float32, astride int, out *[6]float32) {
	if f16 {
		dotF16x1x6AVX2(&w[0], n, &a[0], astride, out)
	} else {
		dotF32x1x6AVX2(&w[0], n, &a[0], astride, out)
	}
}

func swigluSIMD(dst, gate, up []float32) {
	k := 0
	if useSIMD >= simdAVX512VNNI {
		if k = len(dst) &^ 15; k > 0 {
			swigluAVX512(&dst[0], &gate[0], &up[0], k)
		}
	}
	if k < len(dst) {
		swigluAVX2(&dst[k], &gate[k], &up[k], len(dst)-k)
	}
}

func expSubSIMD(x []float32, m float32) float64 {
	if k := len(x) &^ 15; k > 0 && useSIMD >= simdAVX512VNNI {
		// Sixteen a step, the same groups of eight summed in the same
		// order; a last group of eight through the AVX2 kernel, whose sum
		// (0 + its group's) adds on as the next term.
		sum := expSubAVX512(&x[0], m, k)
		if k < len(x) {
			sum += expSubAVX2(&x[k], m, len(x)-k)
		}
		return sum
	}
	return expSubAVX2(&x[0], m, len(x))
}

func expSumF64SIMD(w []float64, l []float32, m float32, invT float64, sums *[4]float64) {
	_ = w[len(l)-1]
	if useSIMD >= simdAVX512VNNI { // bit-identical, eight weights a vector
		expSumF64AVX512(&w[0], &l[0], len(l), m, invT, sums)
		return
	}
	expSumF64AVX2(&w[0], &l[0], len(l), m, invT, sums)
}

func maxF32SIMD(x []float32) float32 { return maxF32AVX2(&x[0], len(x)) }

func f32ToF16SIMD(dst []uint16, src []float32) { f32ToF16x8AVX2(&dst[0], &src[0], len(src)) }

func prefetchRowsSIMD(p unsafe.Pointer, stride, n, bytes int) {
	prefetchRowsT0((*byte)(p), stride, n, bytes)
}
