package kernels

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkMatMulSmallBatch measures Q8_0 and Q4_0 MatMul at the small
// batches of batched decode (a few rows per expert) on 2 threads, at an
// expert's 1024×2816 shape (weights in L2/L3).
func BenchmarkMatMulSmallBatch(b *testing.B) {
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(5, 6))
	for _, typ := range []DType{Q8_0, Q4_0} {
		m := testMatrix(b, r, typ, 1024, 2816)
		for _, nrows := range []int{1, 2, 3, 4, 5, 6, 7, 8, 12, 16} {
			x := randRow(r, nrows*m.Cols)
			out := make([]float32, nrows*m.Rows)
			b.Run(typ.String()+"/nrows="+itoa(nrows), func(b *testing.B) {
				var s Scratch
				MatMul(p, &s, m, x, nrows, out)
				b.SetBytes(int64(len(m.Data)))
				b.ResetTimer()
				for b.Loop() {
					MatMul(p, &s, m, x, nrows, out)
				}
				b.ReportMetric(float64(nrows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}
