package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatMulFloatLevels checks F16 and F32 MatMul on every level bit for bit
// against VecDot (pure Go) at odd column counts (every tail length, and rows
// shorter than one 16-lane step), weight rows not a multiple of the tile,
// batches of 1..13 (with and without a partial batch tile) and pools of 1 and 2, and each output against a float64
// reference within dotBound.
func TestMatMulFloatLevels(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	p := NewPool(2)
	defer p.Close()
	var worst float64
	for _, typ := range []DType{F16, F32} {
		for _, c := range []int{1, 5, 15, 16, 17, 31, 64, 100, 255, 1024, 4352} {
			const rows = 3*floatTile + 3
			m := testMatrix(t, r, typ, rows, c)
			wf := mustDequantize(t, typ, m.Data, rows*c)
			for nrows := 1; nrows <= 2*floatBatch+1; nrows++ {
				x := randRow(r, nrows*c)
				want := make([]float32, nrows*rows)
				for ri := range nrows {
					a := mustQuantize(t, F32, x[ri*c:(ri+1)*c])
					for i := range rows {
						withSIMD(simdGo, func() { want[ri*rows+i] = VecDot(typ, c, m.Row(i), a) })
						var ref, mag float64
						for k := range c {
							p := float64(wf[i*c+k]) * float64(x[ri*c+k])
							ref += p
							mag += math.Abs(p)
						}
						e := math.Abs(float64(want[ri*rows+i]) - ref)
						if e > dotBound(c, mag) {
							t.Fatalf("%s/%d: VecDot = %v, reference %v, err %g > %g", typ, c, want[ri*rows+i], ref, e, dotBound(c, mag))
						}
						if mag > 0 {
							worst = max(worst, e/mag)
						}
					}
				}
				for _, l := range simdLevels() {
					for _, pool := range []*Pool{nil, p} {
						out := make([]float32, nrows*rows)
						var s Scratch
						withSIMD(l, func() { MatMul(pool, &s, m, x, nrows, out) })
						assertBits(t, typ.String()+"/"+itoa(c)+"/nrows="+itoa(nrows)+"/"+l.String(), out, want)
					}
				}
			}
		}
	}
	t.Logf("worst |err|/Σ|wa| = %.3g", worst)
}

// BenchmarkMatMulF16 is an F16 matmul shaped like decode (1 activation row)
// and like prefill (a batch of 36 rows); bytes are weight bytes × rows.
func BenchmarkMatMulF16(b *testing.B) {
	r := rand.New(rand.NewPCG(43, 44))
	const rows, cols = 1024, 1024
	m := testMatrix(b, r, F16, rows, cols)
	for _, nrows := range []int{1, 36} {
		x := randRow(r, nrows*cols)
		out := make([]float32, nrows*rows)
		for _, l := range simdLevels()[:2] {
			b.Run("rows="+itoa(nrows)+"/"+l.String(), func(b *testing.B) {
				b.SetBytes(int64(nrows * len(m.Data)))
				var s Scratch
				withSIMD(l, func() {
					for b.Loop() {
						MatMul(nil, &s, m, x, nrows, out)
					}
				})
			})
		}
	}
}
