package kernels

import (
	"fmt"
	"unsafe"
)

// Float32 vector kernels for attention: F16 row conversion, a dot product
// with a defined reduction order, axpy, and grouped-query kernels that score
// and accumulate several query heads against one key or value row per pass.
//
// The dot product order is fixed so that the pure-Go code and the SIMD
// kernels (one AVX2 kernel, used on every SIMD level) agree bit for bit:
// 16 lanes, lane j accumulating float32(a[i]·b[i]) for i = j, j+16, j+32, …
// over the first len&^15 elements; then lanes j+8 are added into j, j+4 into
// j, j+2 into j, and lane 1 into lane 0; then the remaining len%16 products
// are added one by one in order. Products are rounded before they are added
// (never fused). The result differs from an in-order sum by a few float32
// rounding steps; it is within (len/16 + 4)·2⁻²⁴·Σ|aᵢbᵢ| of the exact sum.

// dotLanes is the 16-lane part of the defined order over len(a) (a multiple
// of 16) elements.
func dotLanes(a, b []float32) float32 {
	var s [16]float32
	for i := 0; i+16 <= len(a); i += 16 {
		x, y := (*[16]float32)(a[i:]), (*[16]float32)(b[i:])
		for j := range s {
			s[j] += float32(x[j] * y[j])
		}
	}
	return reduceLanes(&s)
}

// dotLanesF16 is dotLanes with F16 b.
func dotLanesF16(a []float32, b []uint16) float32 {
	var s [16]float32
	for i := 0; i+16 <= len(a); i += 16 {
		x, y := (*[16]float32)(a[i:]), (*[16]uint16)(b[i:])
		for j := range s {
			s[j] += float32(x[j] * f16Table[y[j]])
		}
	}
	return reduceLanes(&s)
}

// reduceLanes folds 16 lane sums in the defined order.
func reduceLanes(s *[16]float32) float32 {
	for j := range 8 {
		s[j] += s[j+8]
	}
	for j := range 4 {
		s[j] += s[j+4]
	}
	s[0] += s[2]
	s[1] += s[3]
	return s[0] + s[1]
}

// simdF32 reports whether the float32 vector kernels run in assembly.
func simdF32() bool { return useSIMD >= simdAVX2 }

// DotF32 returns Σ a[i]·b[i] over i < len(a) in the defined order (see
// above); b must hold at least len(a) elements. The result is the same with
// and without SIMD.
func DotF32(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	m := n &^ 15
	var s float32
	if m > 0 {
		if simdF32() {
			s = dotF32SIMD(a[:m], b[:m])
		} else {
			s = dotLanes(a[:m], b[:m])
		}
	}
	for i := m; i < n; i++ {
		s += float32(a[i] * b[i])
	}
	return s
}

// dotF16Row is DotF32(a, b converted from F16).
func dotF16Row(a []float32, b []uint16) float32 {
	n := len(a)
	b = b[:n]
	m := n &^ 15
	s := dotLanesF16(a[:m], b[:m])
	for i := m; i < n; i++ {
		s += float32(a[i] * f16Table[b[i]])
	}
	return s
}

// AxpyF32 computes dst[i] += a·x[i] for i < len(dst), the product rounded to
// float32 before the add; x must hold at least len(dst) elements.
func AxpyF32(dst []float32, a float32, x []float32) {
	n := len(dst)
	x = x[:n]
	m := 0
	if simdF32() {
		m = n &^ 7
		if m > 0 {
			axpyF32SIMD(dst[:m], a, x[:m])
		}
	}
	for i := m; i < n; i++ {
		dst[i] += float32(a * x[i])
	}
}

// F16ToF32Row converts src to float32 into dst[:len(src)] (exact, the same
// values as F16ToF32); dst must hold at least len(src) elements.
func F16ToF32Row(dst []float32, src []uint16) {
	n := len(src)
	dst = dst[:n]
	m := 0
	if simdF32() {
		m = n &^ 7
		if m > 0 {
			f16ToF32SIMD(dst[:m], src[:m])
		}
	}
	for i := m; i < n; i++ {
		dst[i] = f16Table[src[i]]
	}
}

// F32ToF16Row sets dst[i] = F32ToF16(src[i]) for every i < len(src) (dst
// must be as long), through F16C where the CPU has it.
func F32ToF16Row(dst []uint16, src []float32) {
	n := len(src)
	dst = dst[:n]
	m := 0
	if simdF32() {
		m = n &^ 7
		if m > 0 {
			f32ToF16SIMD(dst[:m], src[:m])
		}
	}
	for i := m; i < n; i++ {
		dst[i] = F32ToF16(src[i])
	}
}

// RoundF16Row rounds x in place to the nearest F16 value and back,
// x[i] = F16ToF32(F32ToF16(x[i])): round to nearest even, overflow to ±Inf,
// F16 subnormals kept, NaN to the signed quiet NaN.
func RoundF16Row(x []float32) {
	n := len(x)
	m := 0
	if simdF32() {
		m = n &^ 7
		if m > 0 {
			roundF16SIMD(x[:m])
		}
		if m < n {
			// The last few values through the vector kernel too: the
			// scalar conversion cost more than the rest of a short row
			// (attention's probabilities over a few dozen positions).
			var t [8]float32
			copy(t[:], x[m:])
			roundF16SIMD(t[:])
			copy(x[m:], t[:n-m])
			return
		}
	}
	for i := m; i < n; i++ {
		x[i] = f16Table[F32ToF16(x[i])]
	}
}

// attnShapes panics unless the buffers fit heads query heads of hd elements
// against n rows at the given stride.
func attnShapes(fn string, rows, q int, heads, hd, kv, stride, n int) {
	if heads < 1 || hd < 1 || n < 0 || stride < hd || rows < heads*n || q < heads*hd || (n > 0 && kv < (n-1)*stride+hd) {
		panic(fmt.Sprintf("kernels: %s: %d heads × %d against %d rows (stride %d) do not fit buffers of %d, %d and %d", fn, heads, hd, n, stride, rows, q, kv))
	}
}

// AttnScoresF32 computes scores[h·n+t] = DotF32(q[h·hd:(h+1)·hd], k[t·stride:t·stride+hd])
// for every query head h < heads and key row t < n: the query heads of one
// GQA group against the keys of one kv head, each key row read once.
func AttnScoresF32(scores, q []float32, heads, hd int, k []float32, stride, n int) {
	attnShapes("AttnScoresF32", len(scores), len(q), heads, hd, len(k), stride, n)
	if n == 0 {
		return
	}
	if simdF32() && hd%16 == 0 {
		attnScoresF32SIMD(scores, q, heads, hd, k, stride, n)
		return
	}
	for t := range n {
		kr := k[t*stride : t*stride+hd]
		for h := range heads {
			scores[h*n+t] = DotF32(q[h*hd:(h+1)*hd], kr)
		}
	}
}

// AttnScoresF16 is AttnScoresF32 with F16 keys, each converted exactly to
// float32.
func AttnScoresF16(scores, q []float32, heads, hd int, k []uint16, stride, n int) {
	attnShapes("AttnScoresF16", len(scores), len(q), heads, hd, len(k), stride, n)
	if n == 0 {
		return
	}
	if simdF32() && hd%16 == 0 {
		attnScoresF16SIMD(scores, q, heads, hd, k, stride, n)
		return
	}
	for t := range n {
		kr := k[t*stride : t*stride+hd]
		for h := range heads {
			scores[h*n+t] = dotF16Row(q[h*hd:(h+1)*hd], kr)
		}
	}
}

// AttnAccumF32 adds the probability-weighted value rows into the outputs of
// heads query heads: for t = 0, 1, …, n−1 in that order,
// out[h·hd+d] += p[h·n+t]·v[t·stride+d], each product rounded to float32
// before the add. Every output element is thus a sum in position order.
func AttnAccumF32(out, p []float32, heads, hd int, v []float32, stride, n int) {
	attnShapes("AttnAccumF32", len(p), len(out), heads, hd, len(v), stride, n)
	if n == 0 {
		return
	}
	if simdF32() && hd%8 == 0 {
		attnAccumF32SIMD(out, p, heads, hd, v, stride, n)
		return
	}
	for t := range n {
		vr := v[t*stride : t*stride+hd]
		for h := range heads {
			pt := p[h*n+t]
			o := out[h*hd : (h+1)*hd]
			for d, x := range vr {
				o[d] += float32(pt * x)
			}
		}
	}
}

// AttnAccumF16 is AttnAccumF32 with F16 values, each converted exactly to
// float32.
func AttnAccumF16(out, p []float32, heads, hd int, v []uint16, stride, n int) {
	attnShapes("AttnAccumF16", len(p), len(out), heads, hd, len(v), stride, n)
	if n == 0 {
		return
	}
	if simdF32() && hd%8 == 0 {
		attnAccumF16SIMD(out, p, heads, hd, v, stride, n)
		return
	}
	for t := range n {
		vr := v[t*stride : t*stride+hd]
		for h := range heads {
			pt := p[h*n+t]
			o := out[h*hd : (h+1)*hd]
			for d, x := range vr {
				o[d] += float32(pt * f16Table[x])
			}
		}
	}
}

// PrefetchRows hints the CPU to fetch the first width elements of n rows of
// x, stride elements apart, into L1 ahead of their use: the attention reads
// a kv head's slice of each cache row, a stride the hardware prefetchers
// follow poorly. It reads nothing and touches no row past x.
func PrefetchRows[T uint16 | float32](x []T, stride, n, width int) {
	if n <= 0 || width <= 0 || len(x) == 0 || !simdF32() {
		return
	}
	if stride > 0 {
		n = min(n, (len(x)-width)/stride+1)
	}
	if n <= 0 {
		return
	}
	es := int(unsafe.Sizeof(x[0]))
	prefetchRowsSIMD(unsafe.Pointer(&x[0]), stride*es, n, width*es)
}
