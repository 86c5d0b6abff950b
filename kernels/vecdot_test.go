package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// dotTol is the allowed |VecDot − reference| relative to Σ|wᵢ·aᵢ| of the
// dequantized rows. Block types sum exactly in integers and round once per
// block scale and once per float32 accumulation, so the error is about
// (blocks + 2)·2⁻²⁴ of Σ|wᵢaᵢ| (the Q4_K mins term and its 8 lanes add a
// little); 1e-5 covers 4352 elements. BF16 rounds each product to float32
// and sums in float64: 1e-6. F32 and F16 sum float32 products in 16 float32
// lanes (DotF32's order): the worst case is dotBound's (n/16+21)·2⁻²⁴, 1.7e-5
// at 4352, but rounding errors of random data do not line up and 1e-6 holds
// with a wide margin, so the test keeps the tighter bound.
var dotTol = map[DType]float64{
	F32: 1e-6, F16: 1e-6, BF16: 1e-6,
	Q8_0: 1e-5, Q4_0: 1e-5, Q4_K: 2e-5, Q6_K: 1e-5,
}

// refDot is the float64 dot product of the dequantized weight and activation
// rows, and Σ|wᵢaᵢ| for scaling the tolerance.
func refDot(t testing.TB, typ DType, w, a []byte, n int) (dot, mag float64) {
	wf := mustDequantize(t, typ, w, n)
	af := mustDequantize(t, typ.VecDotType(), a, n)
	for i := range wf {
		p := float64(wf[i]) * float64(af[i])
		dot += p
		mag += math.Abs(p)
	}
	return dot, mag
}

func TestVecDotType(t *testing.T) {
	want := map[DType]DType{F32: F32, F16: F32, BF16: BF16, Q8_0: Q8_0, Q4_0: Q8_0, Q4_K: Q8_K, Q6_K: Q8_K}
	for typ, vt := range want {
		if got := typ.VecDotType(); got != vt {
			t.Errorf("%s.VecDotType() = %s, want %s", typ, got, vt)
		}
		if !typ.HasVecDot() {
			t.Errorf("%s.HasVecDot() = false", typ)
		}
	}
	if Q4_1.HasVecDot() {
		t.Error("Q4_1.HasVecDot() = true")
	}
}

func TestVecDot(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, typ := range weightTypes {
		for _, n := range testSizes(typ) {
			t.Run(typ.String()+"/"+itoa(n), func(t *testing.T) {
				for range 4 {
					w := mustQuantize(t, typ, randRow(r, n))
					a := mustQuantize(t, typ.VecDotType(), randRow(r, n))
					got := VecDot(typ, n, w, a)
					want, mag := refDot(t, typ, w, a, n)
					if e := math.Abs(float64(got) - want); e > dotTol[typ]*mag {
						t.Fatalf("VecDot = %v, reference %v, err %g > %g·%g", got, want, e, dotTol[typ], mag)
					}
				}
			})
		}
	}
}

// TestGoldenVecDotQ8_0 checks a hand-computed two-block Q8_0 dot:
// block sums 32·(2·3) and 32·(−1·5), scales (1·0.5) and (2·0.25).
func TestGoldenVecDotQ8_0(t *testing.T) {
	blk := func(d float32, q int8) []byte {
		b := make([]byte, q8_0Bytes)
		putF16(b, d)
		for j := range QK {
			b[2+j] = byte(q)
		}
		return b
	}
	w := append(blk(1, 2), blk(2, -1)...)
	a := append(blk(0.5, 3), blk(0.25, 5)...)
	want := float32(32*6)*0.5 + float32(32*-5)*0.5 // 96 − 80
	if got := VecDot(Q8_0, 64, w, a); got != want {
		t.Fatalf("VecDot = %v, want %v", got, want)
	}
	if got := VecDot(Q4_0, 32, []byte{0x00, 0x3c, 0x9f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, blk(1, 1)); got != float32((15-8)+(9-8)+30*(0-8)) {
		// byte 0x9f: element 0 = 15-8, element 16 = 9-8; the other 30 nibbles are 0: -8 each.
		t.Fatalf("Q4_0 VecDot = %v", got)
	}
}

// TestVecDotZeroActivation checks an all-zero activation (Q8_K stores d = 0)
// gives exactly zero for every type.
func TestVecDotZeroActivation(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, typ := range weightTypes {
		w := mustQuantize(t, typ, randRow(r, 512))
		a := mustQuantize(t, typ.VecDotType(), make([]float32, 512))
		if got := VecDot(typ, 512, w, a); got != 0 {
			t.Errorf("%s: VecDot with zero activation = %v", typ, got)
		}
	}
}
