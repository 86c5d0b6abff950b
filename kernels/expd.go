package kernels

import "math"

// Constants of expd: the range reduction x = n·ln2 + r (ln2 split in a high
// part with trailing zero bits and the rest, fdlibm's values) and the Taylor
// coefficients 1/k! of e^r, k = 0..13; |r| ≤ ln2/2, where the first omitted
// term, r¹⁴/14!, is below 2⁻⁵⁸.
const (
	expdMin   = -708.0 // below it e^x is subnormal or zero: expd returns 0
	expdLog2e = 1.4426950408889634
	expdLn2Hi = 6.93147180369123816490e-01
	expdLn2Lo = 1.90821492927058770002e-10
)

var expdC = [14]float64{
	1, 1, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
	1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
	1.0 / 479001600, 1.0 / 6227020800,
}

// expd returns e^x for expdMin ≤ x ≤ 0 to within a few ulp of math.Exp, and
// 0 for x < expdMin or NaN. Every step is one IEEE operation (math.FMA
// fused), in the order expSumF64AVX2 performs them, so the two agree bit for
// bit.
func expd(x float64) float64 {
	if !(x >= expdMin) {
		return 0
	}
	n := math.RoundToEven(x * expdLog2e)
	r := math.FMA(-n, expdLn2Hi, x)
	r = math.FMA(-n, expdLn2Lo, r)
	p := expdC[13]
	for k := 12; k >= 0; k-- {
		p = math.FMA(p, r, expdC[k])
	}
	return p * math.Float64frombits(uint64(int64(n)+1023)<<52)
}

// ExpSum sets w[i] = e^(float64(l[i] − m)·invT) for every i < len(l) and
// returns their sum: a sampler's unnormalised probabilities at temperature
// 1/invT, with m the largest logit, so every exponent is ≤ 0. NaN or −Inf
// logits, and any whose exponent is below −708, get weight 0. The weights
// are accurate to a few ulp; the sum adds four interleaved partial sums
// (w[4j+k] into the k-th, then (s₀+s₁)+(s₂+s₃)) and the last len(l)%4
// weights in order, the same on every machine. w must hold len(l) values.
func ExpSum(w []float64, l []float32, m float32, invT float64) float64 {
	n := len(l)
	w = w[:n]
	k := n &^ 3
	var s [4]float64
	if k > 0 {
		if useSIMD >= simdAVX2 && useFMA {
			expSumF64SIMD(w, l[:k], m, invT, &s)
		} else {
			for i := range k {
				w[i] = expd(float64(l[i]-m) * invT)
				s[i&3] += w[i]
			}
		}
	}
	total := (s[0] + s[1]) + (s[2] + s[3])
	for i := k; i < n; i++ {
		w[i] = expd(float64(l[i]-m) * invT)
		total += w[i]
	}
	return total
}
