package kernels

import (
	"bytes"
	"math"
	"testing"
)

// TestQuantQ8_0TinyBlock: a block whose largest magnitude is below ~3.7e-37
// has a subnormal scale whose reciprocal overflows. The SIMD quantizer wrote
// quants of -128 from the infinite products, the Go twin 0; both now write
// 0 (with the F16 scale 0, as ggml's x86 reference quantizer does).
func TestQuantQ8_0TinyBlock(t *testing.T) {
	x := make([]float32, 2*QK)
	for i := range QK {
		x[i] = 1e-37 * float32(i%7-3) / 3 // amax ≈ 1e-37: 1/d = +Inf
	}
	x[QK+5] = math.SmallestNonzeroFloat32 // d is 0: 1/d = +Inf as well
	want := make([]byte, 2*q8_0Bytes)
	quantQ8_0Go(x, want)
	if !bytes.Equal(want, make([]byte, 2*q8_0Bytes)) {
		t.Fatalf("Go quantizer: % x, want zeros", want)
	}
	for _, l := range simdLevels() {
		got := make([]byte, 2*q8_0Bytes)
		withSIMD(l, func() {
			if err := Quantize(Q8_0, x, got); err != nil {
				t.Fatal(err)
			}
		})
		if !bytes.Equal(got, want) {
			t.Errorf("%s: % x, want % x", l, got, want)
		}
	}
}

// TestSoftmaxNaN: a NaN logit makes every probability NaN at every level,
// wherever it sits. The SIMD exponential clamped a NaN to its lower bound
// (probability 0, the others renormalised) in the vector part and not in
// the scalar tail, so the result depended on the NaN's position.
func TestSoftmaxNaN(t *testing.T) {
	for _, pos := range []int{1, 8} {
		for _, l := range simdLevels() {
			x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 0.5}
			x[pos] = float32(math.NaN())
			withSIMD(l, func() { Softmax(x) })
			for i, v := range x {
				if !math.IsNaN(float64(v)) {
					t.Errorf("%s, NaN at %d: p[%d] = %v, want NaN", l, pos, i, v)
					break
				}
			}
		}
	}
}

// TestMatMulZeroCols: a quantized matrix with no columns gives zeros at
// every level, as the Go path does; the SIMD row kernels indexed its empty
// data and panicked.
func TestMatMulZeroCols(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []DType{Q8_0, Q4_0, F16, F32} {
		for _, l := range simdLevels() {
			out := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
			var s Scratch
			withSIMD(l, func() { MatMul(p, &s, Matrix{Type: typ, Rows: 8, Cols: 0}, nil, 2, out) })
			for i, v := range out {
				if v != 0 {
					t.Errorf("%s at %s: out[%d] = %v, want 0", typ, l, i, v)
					break
				}
			}
		}
	}
}
