package kernels

import (
	"math/rand/v2"
	"testing"
)

// TestMatMulBatch checks a batch of products of mixed types, shapes and
// batch sizes (the fused VNNI row path, the GEMM, the float path, empty
// jobs, jobs sharing an input) bit for bit against MatMul one at a time, at every SIMD level, with
// and without a pool, and that steady-state Runs do not allocate.
func TestMatMulBatch(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	p := NewPool(2)
	defer p.Close()
	type spec struct {
		typ        DType
		rows, cols int
		nrows      int
		sameX      int // 1 + index of an earlier spec whose input this one reuses
	}
	specs := []spec{
		{Q8_0, 48, 256, 1, 0}, {Q8_0, 37, 96, 3, 0}, {Q4_0, 64, 128, 5, 0}, {Q8_0, 16, 64, 0, 0},
		{F16, 24, 64, 2, 0}, {Q8_0, 40, 128, 20, 0}, {Q4_0, 33, 64, 16, 0}, {Q8_0, 2816, 1024, 4, 0},
		// Inputs shared with jobs 0, 7 and 2 (packed once), and one with
		// job 1's input but fewer rows (packed again).
		{Q8_0, 32, 256, 1, 1}, {Q4_0, 512, 1024, 4, 8}, {Q8_0, 20, 128, 5, 3}, {Q8_0, 16, 96, 2, 2},
	}
	ms := make([]Matrix, len(specs))
	xs := make([][]float32, len(specs))
	for i, sp := range specs {
		ms[i] = testMatrix(t, r, sp.typ, sp.rows, sp.cols)
		xs[i] = randRow(r, max(sp.nrows, 1)*sp.cols)
		if sp.sameX > 0 {
			xs[i] = xs[sp.sameX-1]
		}
	}
	for _, l := range simdLevels() {
		for _, pool := range []*Pool{nil, p} {
			withSIMD(l, func() {
				var b MatMulBatch
				jobs, outs := newJobs(ms, xs, func(i int) int { return specs[i].nrows })
				b.Run(pool, jobs)
				for i, sp := range specs {
					want := make([]float32, sp.nrows*sp.rows)
					var s Scratch
					MatMul(pool, &s, ms[i], xs[i], sp.nrows, want)
					assertBits(t, l.String()+"/"+sp.typ.String()+"/job="+itoa(i), outs[i], want)
				}
				if pool != nil {
					if n := testing.AllocsPerRun(5, func() { b.Run(pool, jobs) }); n != 0 {
						t.Errorf("%s: Run allocates %v times", l, n)
					}
				}
			})
		}
	}
}

// newJobs returns a job per matrix, each with its own Scratch and output,
// job i taking nrows(i) rows of xs[i].
func newJobs(ms []Matrix, xs [][]float32, nrows func(i int) int) ([]MatMulJob, [][]float32) {
	scratch := make([]Scratch, len(ms))
	jobs := make([]MatMulJob, len(ms))
	outs := make([][]float32, len(ms))
	for i, m := range ms {
		outs[i] = make([]float32, nrows(i)*m.Rows)
		jobs[i] = MatMulJob{S: &scratch[i], M: m, X: xs[i], NRows: nrows(i), Out: outs[i]}
	}
	return jobs, outs
}

func TestSpans(t *testing.T) {
	end := []int{3, 3, 7, 10}
	type call struct{ k, lo, hi int }
	var got []call
	spans(end, 2, 9, func(k, lo, hi int) { got = append(got, call{k, lo, hi}) })
	want := []call{{0, 2, 3}, {2, 0, 4}, {3, 0, 2}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

// TestMatMulBatchChunks runs batches whose activation rows go in several
// chunks (each chunk meeting every weight tile, the chunks' items spread
// over the pool) against VecDot bit for bit: packed tiles and row-layout
// weights, Q4_0, jobs sharing an input, a partial last weight tile, chunk
// limits in rows and in bytes, with and without a pool.
func TestMatMulBatchChunks(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(43, 44))
	p := NewPool(2)
	defer p.Close()
	type spec struct {
		typ        DType
		rows, cols int
		nrows      int
		tiles      bool
		sameX      int // 1 + index of an earlier spec whose input this one reuses
	}
	specs := []spec{
		{Q8_0, 64, 256, 40, true, 0}, {Q8_0, 48, 256, 40, false, 1}, {Q4_0, 32, 128, 23, false, 0},
		{Q8_0, 37, 96, 19, false, 0}, {Q8_0, 32, 2816, 9, true, 0}, {Q8_0, 16, 64, 1, true, 0},
	}
	ms := make([]Matrix, len(specs))
	xs := make([][]float32, len(specs))
	wants := make([][]float32, len(specs))
	for i, sp := range specs {
		ms[i] = testMatrix(t, r, sp.typ, sp.rows, sp.cols)
		if sp.tiles {
			ms[i].Tiles = new(Tiles)
			ms[i].Tiles.Store(PackTiles(nil, ms[i]))
		}
		xs[i] = randRow(r, sp.nrows*sp.cols)
		if sp.sameX > 0 {
			xs[i] = xs[sp.sameX-1]
		}
		wants[i] = vecDotOut(t, ms[i], xs[i], sp.nrows)
	}
	// Limits: 7 rows; 25 rows' bytes at 256 columns (40 rows in two chunks
	// of 20); the rowActs floor; 3 rows.
	for _, lim := range []struct{ rows, bytes int }{{7, 1 << 30}, {1 << 20, 25 * 256 / QK * raBlock}, {1 << 20, 4 * 96 / QK * raBlock}, {3, 1}} {
		for _, pool := range []*Pool{nil, p} {
			func() {
				defer func(c, b int) { rowChunk, rowChunkBytes = c, b }(rowChunk, rowChunkBytes)
				rowChunk, rowChunkBytes = lim.rows, lim.bytes
				var b MatMulBatch
				jobs, outs := newJobs(ms, xs, func(i int) int { return specs[i].nrows })
				b.Run(pool, jobs)
				for i := range specs {
					assertBits(t, "chunk="+itoa(lim.rows)+"/bytes="+itoa(lim.bytes)+"/job="+itoa(i), outs[i], wants[i])
				}
			}()
		}
	}
}

func TestChunkCount(t *testing.T) {
	if AMX() {
		t.Skip("AMX raises the floor") // TestChunkCountAMX
	}
	defer func(c, b int) { rowChunk, rowChunkBytes = c, b }(rowChunk, rowChunkBytes)
	rowChunk, rowChunkBytes = 1<<20, 320<<10
	for _, c := range []struct{ nrows, rowBytes, want int }{
		{1, 2048, 1}, {160, 2048, 1}, {161, 2048, 2}, {608, 2048, 4}, // 1024 columns: 160 rows a chunk
		{58, 5632, 1}, {152, 5632, 3}, // 2816 columns: 58 rows a chunk
		{40, 1 << 20, 3}, // a huge row: rowActs (18) rows a chunk
	} {
		if got := chunkCount(c.nrows, c.rowBytes); got != c.want {
			t.Errorf("chunkCount(%d, %d) = %d, want %d", c.nrows, c.rowBytes, got, c.want)
		}
	}
}

// TestChunkCountAMX checks that where AMX runs a large batch's chunks keep
// the rows its path needs (2816 columns: 58 rows' bytes, below amxMinRows).
func TestChunkCountAMX(t *testing.T) {
	withAMX(true, 64, func() {
		if !AMX() {
			t.Skip("no AMX")
		}
		for _, n := range []int{130, 152, 608, 1024} {
			c := chunkCount(n, 2816/QK*raBlock)
			if n/c < amxMinRows {
				t.Errorf("%d rows in %d chunks: fewer than %d rows a chunk", n, c, amxMinRows)
			}
		}
	})
}
