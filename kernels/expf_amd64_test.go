//go:build amd64 && !purego

package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpf512MatchesAVX2 runs the sixteen-lane SwiGLU and softmax
// exponential kernels against their eight-lane twins on the same inputs,
// NaNs of several payloads, infinities and overflowing arguments included:
// every value and the exponentials' float64 sum must have the same bits.
func TestExpf512MatchesAVX2(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512")
	}
	r := rand.New(rand.NewPCG(75, 76))
	special := []float32{math.Float32frombits(0x7fc00011), math.Float32frombits(0xffc00022), float32(math.Inf(1)), float32(math.Inf(-1)), 200, -200, 88.7, -103.9, 0, 1e-40}
	for _, n := range []int{16, 32, 48, 160, 2816} {
		for trial := range 8 {
			gate, up := make([]float32, n), make([]float32, n)
			for i := range gate {
				gate[i], up[i] = float32(r.NormFloat64()*float64(1+10*trial)), float32(r.NormFloat64())
				if r.IntN(8) == 0 {
					gate[i] = special[r.IntN(len(special))]
				}
				if r.IntN(16) == 0 {
					up[i] = special[r.IntN(len(special))]
				}
			}
			a, b := make([]float32, n), make([]float32, n)
			swigluAVX2(&a[0], &gate[0], &up[0], n)
			swigluAVX512(&b[0], &gate[0], &up[0], n)
			assertBits(t, "swiglu/n="+itoa(n), b, a)
			x, y := append([]float32(nil), gate...), append([]float32(nil), gate...)
			m := float32(r.NormFloat64())
			s8 := expSubAVX2(&x[0], m, n)
			s16 := expSubAVX512(&y[0], m, n)
			assertBits(t, "expSub/n="+itoa(n), y, x)
			if math.Float64bits(s8) != math.Float64bits(s16) {
				t.Fatalf("n=%d trial %d: sum %v (AVX-512), %v (AVX2)", n, trial, s16, s8)
			}
		}
	}
}
