package kernels

import (
	"math/rand/v2"
	"testing"
)

// TestMatMulFloat512 checks the AVX-512 F16/F32 path bit for bit against the
// pure-Go VecDot: weight rows around multiples of the 8-row tile (partial
// tiles through the 4-row kernels and Go), nrows 1..17 (decode kernel, every
// 4×n kernel and remainder) and batches crossing the activation block
// (floatActBlock), odd column counts, pools of 1 and 2.
func TestMatMulFloat512(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512")
	}
	r := rand.New(rand.NewPCG(45, 46))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []DType{F16, F32} {
		for _, c := range []int{16, 33, 1000} {
			for _, rows := range []int{4, 12, 21, 40} {
				m := testMatrix(t, r, typ, rows, c)
				for _, nrows := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, floatActBlock + 1, 2*floatActBlock + 7} {
					x := randRow(r, nrows*c)
					want := make([]float32, nrows*rows)
					for ri := range nrows {
						a := mustQuantize(t, F32, x[ri*c:(ri+1)*c])
						for i := range rows {
							withSIMD(simdGo, func() { want[ri*rows+i] = VecDot(typ, c, m.Row(i), a) })
						}
					}
					for _, pool := range []*Pool{nil, p} {
						out := make([]float32, nrows*rows)
						var s Scratch
						withSIMD(simdAVX512VNNI, func() { MatMul(pool, &s, m, x, nrows, out) })
						assertBits(t, typ.String()+"/"+itoa(c)+"/rows="+itoa(rows)+"/nrows="+itoa(nrows), out, want)
					}
				}
			}
		}
	}
}

// BenchmarkMatMulF16Levels compares the AVX2 and AVX-512 F16 paths in one
// binary (interleaved, robust to machine noise) at an expert's shape, for
// decode, small batches and prefill, on 2 threads.
func BenchmarkMatMulF16Levels(b *testing.B) {
	if cpuSIMD < simdAVX512VNNI {
		b.Skip("no AVX-512")
	}
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(47, 48))
	m := testMatrix(b, r, F16, 1024, 2816)
	for _, nrows := range []int{1, 2, 4, 8, 16, 64, 256} {
		x := randRow(r, nrows*m.Cols)
		out := make([]float32, nrows*m.Rows)
		for _, l := range []simdLevel{simdAVX2, simdAVX512VNNI} {
			b.Run("nrows="+itoa(nrows)+"/"+l.String(), func(b *testing.B) {
				withSIMD(l, func() {
					var s Scratch
					MatMul(p, &s, m, x, nrows, out)
					b.SetBytes(int64(len(m.Data)))
					for b.Loop() {
						MatMul(p, &s, m, x, nrows, out)
					}
					b.ReportMetric(float64(nrows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
				})
			})
		}
	}
}
