package kernels

import (
	"math/rand/v2"
	"testing"
)

// withAMX runs f with MatMul's AMX path on or off, taken from min rows on.
func withAMX(on bool, min int, f func()) {
	defer func(u bool, m int) { useAMX, amxMinRows = u, m }(useAMX, amxMinRows)
	useAMX, amxMinRows = on, min
	f()
}

// TestMatMulAMX checks the AMX path bit for bit against VecDot: every
// kernel width (1..16 rows in a call, several groups of 16 in one),
// block counts odd and even (1..5 blocks, 32, 88), weight rows past the
// last full tile, packed tiles and tiles packed on the fly, through pools
// of 1 and 2 workers; from one row on, and at the default threshold with
// 72-row chunks (chunks that start off a multiple of 16).
func TestMatMulAMX(t *testing.T) {
	if !hwAMX || !amxGranted() {
		t.Skip("no AMX")
	}
	r := rand.New(rand.NewPCG(43, 44))
	p := NewPool(2)
	defer p.Close()
	for _, c := range []int{32, 64, 96, 128, 160, 1024, 2816} {
		for _, rows := range []int{16, 37} {
			m := testMatrix(t, r, Q8_0, rows, c)
			for _, nrows := range []int{1, 2, 15, 16, 17, 31, 33, 47, 130, 144} {
				x := randRow(r, nrows*c)
				want := vecDotOut(t, m, x, nrows)
				for _, packed := range []bool{false, true} {
					mm := m
					if packed {
						mm.Tiles = new(Tiles)
						mm.Tiles.Store(PackTiles(nil, m))
					}
					for _, pool := range []*Pool{nil, p} {
						what := "cols=" + itoa(c) + "/rows=" + itoa(rows) + "/nrows=" + itoa(nrows)
						if packed {
							what += "/packed"
						}
						out := make([]float32, nrows*rows)
						var s Scratch
						withAMX(true, 1, func() { MatMul(pool, &s, mm, x, nrows, out) })
						assertBits(t, what, out, want)
						if nrows > amxMinRows {
							clear(out)
							withRowActs(rowActs, 72, func() { MatMul(pool, &s, mm, x, nrows, out) })
							assertBits(t, what+"/chunks=72", out, want)
						}
					}
				}
			}
		}
	}
}

// BenchmarkMatMulAMX compares the AMX path with the VNNI one for a
// prefill's rows against one expert-shaped matrix with packed tiles.
func BenchmarkMatMulAMX(b *testing.B) {
	if !hwAMX || !amxGranted() {
		b.Skip("no AMX")
	}
	r := rand.New(rand.NewPCG(45, 46))
	p := NewPool(2)
	defer p.Close()
	for _, shape := range [][2]int{{2816, 1024}, {1024, 2816}} {
		m := testMatrix(b, r, Q8_0, shape[0], shape[1])
		m.Tiles = new(Tiles)
		m.Tiles.Store(PackTiles(p, m))
		for _, nrows := range []int{32, 128} {
			x := randRow(r, nrows*m.Cols)
			out := make([]float32, nrows*m.Rows)
			for _, amx := range []bool{false, true} {
				name := itoa(m.Rows) + "x" + itoa(m.Cols) + "/nrows=" + itoa(nrows) + "/vnni"
				if amx {
					name = itoa(m.Rows) + "x" + itoa(m.Cols) + "/nrows=" + itoa(nrows) + "/amx"
				}
				b.Run(name, func(b *testing.B) {
					withAMX(amx, 1, func() {
						var s Scratch
						b.SetBytes(int64(2 * nrows * m.Rows * m.Cols)) // ops
						for b.Loop() {
							MatMul(p, &s, m, x, nrows, out)
						}
					})
				})
			}
		}
	}
}
