package kernels_test

import (
	"fmt"

	"github.com/conclave-ai/conclave/kernels"
)

func ExampleQuantize() {
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i) - 16
	}
	n, _ := kernels.Q8_0.RowSize(len(x))
	q := make([]byte, n)
	if err := kernels.Quantize(kernels.Q8_0, x, q); err != nil {
		panic(err)
	}
	y := make([]float32, len(x))
	if err := kernels.Dequantize(kernels.Q8_0, q, y); err != nil {
		panic(err)
	}
	fmt.Println(n, "bytes; scale", kernels.F16ToF32(uint16(q[0])|uint16(q[1])<<8))
	fmt.Printf("%.3f %.3f %.3f\n", y[0], y[17], y[31])
	// Output:
	// 34 bytes; scale 0.12597656
	// -15.999 1.008 14.991
}

func ExampleMatMul() {
	// A 2×32 Q8_0 weight matrix: row 0 all ones, row 1 all twos.
	w := make([]float32, 64)
	for i := range w {
		w[i] = float32(1 + i/32)
	}
	rs, _ := kernels.Q8_0.RowSize(32)
	data := make([]byte, 2*rs)
	if err := kernels.Quantize(kernels.Q8_0, w, data); err != nil {
		panic(err)
	}
	m := kernels.Matrix{Type: kernels.Q8_0, Rows: 2, Cols: 32, Data: data}

	p := kernels.NewPool(2)
	defer p.Close()
	var s kernels.Scratch
	x := make([]float32, 2*32) // two activation rows: all 0.5, all -1
	for i := range x {
		x[i] = 0.5
		if i >= 32 {
			x[i] = -1
		}
	}
	out := make([]float32, 2*2)
	kernels.MatMul(p, &s, m, x, 2, out)
	fmt.Printf("%.2f\n", out)
	// Output:
	// [16.00 32.00 -32.00 -63.99]
}

// The query heads of one GQA group scored against two F16 key rows, then the
// softmax-weighted F16 value rows accumulated into their outputs.
func ExampleAttnScoresF16() {
	const heads, hd, stride, n = 2, 16, 16, 2
	q := make([]float32, heads*hd)
	for i := range q {
		q[i] = float32(i/hd + 1) // head 0 all 1, head 1 all 2
	}
	kv := make([]uint16, n*stride)
	for i := range kv {
		kv[i] = kernels.F32ToF16(float32(i/stride) + 0.5) // row 0 all 0.5, row 1 all 1.5
	}
	scores := make([]float32, heads*n)
	kernels.AttnScoresF16(scores, q, heads, hd, kv, stride, n)
	fmt.Println(scores)

	p := []float32{0.25, 0.75, 1, 0} // probabilities, heads × positions
	out := make([]float32, heads*hd)
	kernels.AttnAccumF16(out, p, heads, hd, kv, stride, n)
	fmt.Println(out[0], out[hd])
	// Output:
	// [8 24 16 48]
	// 1.25 0.5
}
