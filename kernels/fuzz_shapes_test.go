package kernels

import (
	"math/rand/v2"
	"testing"
)

// FuzzMatMulShapes drives MatMul with fuzzed shapes — weight type, weight
// rows, row length in blocks, activation rows, pool — and checks every SIMD
// level bit for bit against VecDot on each (weight row, activation row).
// Run it with: go test -fuzz FuzzMatMulShapes ./kernels/
func FuzzMatMulShapes(f *testing.F) {
	f.Add(uint8(0), uint16(1), uint8(1), uint8(1), false, uint64(1))
	f.Add(uint8(1), uint16(17), uint8(3), uint8(5), true, uint64(2))
	f.Add(uint8(2), uint16(23), uint8(33), uint8(9), true, uint64(3))
	f.Add(uint8(3), uint16(40), uint8(8), uint8(16), false, uint64(4))
	f.Add(uint8(4), uint16(5), uint8(2), uint8(3), true, uint64(5))
	types := []DType{F32, F16, Q8_0, Q4_0, Q4_K, Q6_K, BF16}
	pool := NewPool(2)
	f.Cleanup(pool.Close)
	f.Fuzz(func(t *testing.T, ti uint8, rows16 uint16, blocks, nrows8 uint8, usePool bool, seed uint64) {
		typ := types[int(ti)%len(types)]
		rows := 1 + int(rows16)%48
		nrows := 1 + int(nrows8)%20
		bs := typ.VecDotType().BlockSize()
		if b := typ.BlockSize(); b > bs {
			bs = b
		}
		if bs < 16 {
			bs = 16 // float types: exercise the 16-lane body and a tail
		}
		cols := bs * (1 + int(blocks)%(4096/bs))
		if typ.BlockSize() == 1 {
			cols += int(blocks) % 16 // float rows need not be whole lanes
		}
		r := rand.New(rand.NewPCG(seed, uint64(ti)))
		m := testMatrix(t, r, typ, rows, cols)
		x := make([]float32, 0, nrows*cols)
		for range nrows {
			x = append(x, randRow(r, cols)...)
		}
		want := make([]float32, nrows*rows)
		for ri := range nrows {
			a := mustQuantize(t, typ.VecDotType(), x[ri*cols:(ri+1)*cols])
			for i := range rows {
				want[ri*rows+i] = VecDot(typ, cols, m.Row(i), a)
			}
		}
		p := (*Pool)(nil)
		if usePool {
			p = pool
		}
		for _, l := range simdLevels() {
			out := make([]float32, nrows*rows)
			var s Scratch
			withSIMD(l, func() { MatMul(p, &s, m, x, nrows, out) })
			assertBits(t, typ.String()+"/"+l.String(), out, want)
		}
	})
}
