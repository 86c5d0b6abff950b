package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// ulp32 is the spacing of float32 values at |v| (the subnormal spacing
// below the normal range).
func ulp32(v float64) float64 {
	f := float32(math.Abs(v))
	if f < math.SmallestNonzeroFloat32*(1<<23) {
		return math.SmallestNonzeroFloat32
	}
	return float64(math.Nextafter32(f, float32(math.Inf(1))) - f)
}

// TestExpfAccuracy compares expf with float64 exp over its whole range:
// within 2 ULP where the result is normal, within 1 subnormal step below,
// +Inf past the float32 range and 0 far below it.
func TestExpfAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	worst := 0.0
	check := func(x float32) {
		got, want := float64(expf(x)), math.Exp(float64(x))
		if want > math.MaxFloat32 {
			if !math.IsInf(got, 1) {
				t.Fatalf("expf(%v) = %v, want +Inf", x, got)
			}
			return
		}
		err := math.Abs(got-want) / ulp32(want)
		limit := 2.0
		if want < 0x1p-126 {
			limit = 1 // one rounding to the subnormal grid
		}
		if err > limit {
			t.Fatalf("expf(%v) = %v, want %v: %.2f ULP", x, got, want, err)
		}
		worst = max(worst, err)
	}
	for range 200000 {
		check(float32(r.Float64()*200 - 110))
	}
	for range 100000 {
		check(float32(r.NormFloat64() * 4))
	}
	for _, x := range []float32{0, -0, 1, -1, 1e-8, -1e-8, 88.72, 88.73, 89, 100, -87.3, -87.4, -103, -103.9, -104, -120, float32(math.Inf(1)), float32(math.Inf(-1))} {
		check(x)
	}
	t.Logf("worst error %.2f ULP", worst)
}

// TestExpfKernelsBitIdentical checks SwiGLU and Softmax at every SIMD level
// against the pure-Go element loop, bit for bit, at lengths with and
// without a tail and with arguments from small to overflowing.
func TestExpfKernelsBitIdentical(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	for _, scale := range []float64{0.5, 4, 40, 150} {
		for _, n := range []int{1, 7, 8, 9, 31, 64, 100, 2816} {
			gate, up := make([]float32, n), make([]float32, n)
			for i := range gate {
				gate[i] = float32(r.NormFloat64() * scale)
				up[i] = float32(r.NormFloat64())
			}
			want := make([]float32, n)
			swigluGo(want, gate, up)
			wantSoft := append([]float32(nil), gate...)
			withSIMD(simdGo, func() { Softmax(wantSoft) })
			for _, l := range simdLevels() {
				withSIMD(l, func() {
					got := make([]float32, n)
					SwiGLU(got, gate, up)
					soft := append([]float32(nil), gate...)
					Softmax(soft)
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%v n %d scale %v: SwiGLU[%d] = %v, want %v (gate %v)", l, n, scale, i, got[i], want[i], gate[i])
						}
						if math.Float32bits(soft[i]) != math.Float32bits(wantSoft[i]) {
							t.Fatalf("%v n %d scale %v: Softmax[%d] = %v, want %v", l, n, scale, i, soft[i], wantSoft[i])
						}
					}
				})
			}
		}
	}
}

// TestSwiGLUAccuracy compares SwiGLU with a float64 reference.
func TestSwiGLUAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	const n = 4096
	gate, up, got := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range gate {
		gate[i] = float32(r.NormFloat64() * 6)
		up[i] = float32(r.NormFloat64())
	}
	SwiGLU(got, gate, up)
	for i := range got {
		g := float64(gate[i])
		want := g / (1 + math.Exp(-g)) * float64(up[i])
		if math.Abs(float64(got[i])-want) > 6e-7*math.Abs(want)+1e-38 {
			t.Fatalf("SwiGLU[%d](%v, %v) = %v, want %v", i, gate[i], up[i], got[i], want)
		}
	}
}

func BenchmarkSwiGLU(b *testing.B) {
	const n = 2816
	gate, up, dst := make([]float32, n), make([]float32, n), make([]float32, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range gate {
		gate[i] = float32(r.NormFloat64() * 3)
		up[i] = float32(r.NormFloat64())
	}
	for _, l := range simdLevels() {
		b.Run(l.String(), func(b *testing.B) {
			withSIMD(l, func() {
				b.SetBytes(3 * 4 * n)
				for b.Loop() {
					SwiGLU(dst, gate, up)
				}
			})
		})
	}
}
