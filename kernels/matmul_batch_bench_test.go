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

// BenchmarkExpertLayerPrefill runs one bench-preset layer's eight experts
// at 128 rows each (Gate and Up of every expert, then every Down, through
// MatMulBatch, as a prefill step does) on 2 threads: each group of rows
// transposing the weights itself (transpose-each), one transpose per tile
// shared by the groups (transpose-once), and packed tiles (tiles).
func BenchmarkExpertLayerPrefill(b *testing.B) {
	if cpuSIMD < simdAVX512VNNI {
		b.Skip("no AVX-512 VNNI")
	}
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(7, 8))
	const experts, rows, dim, ffn = 8, 128, 1024, 2816
	var gate, up, down [experts]Matrix
	for e := range experts {
		gate[e] = testMatrix(b, r, Q8_0, ffn, dim)
		up[e] = testMatrix(b, r, Q8_0, ffn, dim)
		down[e] = testMatrix(b, r, Q8_0, dim, ffn)
	}
	x, h := randRow(r, experts*rows*dim), randRow(r, experts*rows*ffn)
	g, u, o := make([]float32, experts*rows*ffn), make([]float32, experts*rows*ffn), make([]float32, experts*rows*dim)
	var s [3 * experts]Scratch
	for _, mode := range []string{"transpose-each", "transpose-once", "tiles", "tiles-amx"} {
		if mode == "tiles-amx" && !AMX() {
			continue
		}
		tiled := func(m Matrix) Matrix {
			if mode == "tiles" || mode == "tiles-amx" {
				m.Tiles = new(Tiles)
				m.Tiles.Store(PackTiles(p, m))
			}
			return m
		}
		var gm, um, dm [experts]Matrix
		for e := range experts {
			gm[e], um[e], dm[e] = tiled(gate[e]), tiled(up[e]), tiled(down[e])
		}
		b.Run(mode, func(b *testing.B) {
			amx := useAMX
			useAMX = mode == "tiles-amx"
			defer func() { useAMX = amx }()
			withTileOnce(mode != "transpose-each", func() {
				var mb MatMulBatch
				jobs := make([]MatMulJob, 0, 2*experts)
				for b.Loop() {
					jobs = jobs[:0]
					for e := range experts {
						jobs = append(jobs, MatMulJob{S: &s[3*e], M: gm[e], X: x[e*rows*dim:], NRows: rows, Out: g[e*rows*ffn:]},
							MatMulJob{S: &s[3*e+1], M: um[e], X: x[e*rows*dim:], NRows: rows, Out: u[e*rows*ffn:]})
					}
					mb.Run(p, jobs)
					jobs = jobs[:0]
					for e := range experts {
						jobs = append(jobs, MatMulJob{S: &s[3*e+2], M: dm[e], X: h[e*rows*ffn:], NRows: rows, Out: o[e*rows*dim:]})
					}
					mb.Run(p, jobs)
				}
			})
		})
	}
}

// BenchmarkRowChunks runs one bench-preset matrix shape (2816×1024 and
// 1024×2816, Q8_0 in packed tiles) against 152 and 576 activation rows (an
// expert's and Q/K/V's share of a 16-prompt wave) in one pass over the
// weights (one-pass) and in chunks that stay in L2 (chunked, the default),
// on 2 threads, reporting VPDPBUSD/s a thread.
func BenchmarkRowChunks(b *testing.B) {
	if cpuSIMD < simdAVX512VNNI {
		b.Skip("no AVX-512 VNNI")
	}
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(7, 8))
	for _, shape := range [][2]int{{2816, 1024}, {1024, 2816}} {
		m := testMatrix(b, r, Q8_0, shape[0], shape[1])
		m.Tiles = new(Tiles)
		m.Tiles.Store(PackTiles(p, m))
		for _, rows := range []int{152, 576} {
			x := randRow(r, rows*m.Cols)
			out := make([]float32, rows*m.Rows)
			for _, mode := range []string{"one-pass", "chunked"} {
				b.Run("cols="+itoa(m.Cols)+"/rows="+itoa(rows)+"/"+mode, func(b *testing.B) {
					defer func(v int) { rowChunkBytes = v }(rowChunkBytes)
					if mode == "one-pass" {
						rowChunkBytes = 1 << 40
					}
					var s Scratch
					var mb MatMulBatch
					jobs := []MatMulJob{{S: &s, M: m, X: x, NRows: rows, Out: out}}
					for b.Loop() {
						mb.Run(p, jobs)
					}
					b.ReportMetric(float64(b.N)*float64(rows*m.Rows*m.Cols/64)/b.Elapsed().Seconds()/1e9/2, "GVNNI/s/thread")
				})
			}
		}
	}
}
