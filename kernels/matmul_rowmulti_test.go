package kernels

import (
	"math/rand/v2"
	"testing"
)

// withRowActs runs f with MatMul's multi-row VNNI kernels limited to n
// activation rows per weight pass and chunks of chunk activation rows.
func withRowActs(n, chunk int, f func()) {
	defer func(a, c int) { rowActs, rowChunk = a, c }(rowActs, rowChunk)
	rowActs, rowChunk = n, chunk
	f()
}

// TestMatMulRowMulti checks the multi-activation-row VNNI row kernels bit for
// bit against VecDot at every group size (rowActs 1..maxRowActs), nrows
// 1..19 (in one chunk and in chunks of 5), weight rows around multiples
// of 16, odd row lengths, both Q4_0 variants, through pools of 1 and 2.
func TestMatMulRowMulti(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(31, 32))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []DType{Q8_0, Q4_0} {
		for _, c := range []int{32, 96, 1056, 2816} {
			for _, rows := range []int{16, 37} {
				m := testMatrix(t, r, typ, rows, c)
				for nrows := 1; nrows <= 19; nrows++ {
					x := randRow(r, nrows*c)
					want := vecDotOut(t, m, x, nrows)
					for _, lim := range rowMultiLimits {
						ra, chunk := lim[0], lim[1]
						for _, g := range gfniModes() {
							if g && typ != Q4_0 {
								continue
							}
							for _, pool := range []*Pool{nil, p} {
								for _, once := range []bool{true, false} {
									out := make([]float32, nrows*rows)
									var s Scratch
									withRowActs(ra, chunk, func() {
										withGFNI(g, func() {
											withTileOnce(once, func() {
												withSIMD(simdAVX512VNNI, func() { MatMul(pool, &s, m, x, nrows, out) })
											})
										})
									})
									what := typ.String() + "/" + itoa(c) + "/rows=" + itoa(rows) + "/nrows=" + itoa(nrows) + "/acts=" + itoa(ra) + "/chunk=" + itoa(chunk)
									if g {
										what += "/gfni"
									}
									if !once {
										what += "/transpose-each"
									}
									assertBits(t, what, out, want)
								}
							}
						}
					}
				}
			}
		}
	}
}

// withTileOnce runs f with MatMul transposing a weight tile that several
// activation groups share once (on) or in every group's kernel (off).
func withTileOnce(on bool, f func()) {
	defer func(v bool) { tileOnce = v }(tileOnce)
	tileOnce = on
	f()
}

// rowMultiLimits are the (rowActs, rowChunk) settings TestMatMulRowMulti
// runs: every group size from 1 to maxRowActs turns up as nrows varies.
var rowMultiLimits = [][2]int{{1, 1 << 20}, {2, 1 << 20}, {3, 5}, {4, 1 << 20}, {5, 1 << 20}, {7, 1 << 20}, {8, 1 << 20}, {16, 1 << 20}, {16, 5}, {18, 1 << 20}}

// TestRowMultiExtreme drives the multi-row kernels with extreme weight quants
// (Q8_0 -128/127, Q4_0 nibbles 0/15), activation quants of -128/127 (beyond
// the quantizer's ±127), large, tiny, negative and zero scales, against
// VecDot bit for bit.
func TestRowMultiExtreme(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(33, 34))
	const rows, cols = 16, 4352
	nb := cols / QK
	scales := []float32{65504, 1, 0.25, 6.1e-5, -2, 0}
	for _, typ := range []DType{Q8_0, Q4_0} {
		bs := typ.TypeSize()
		data := make([]byte, rows*nb*bs)
		for b := 0; b < len(data); b += bs {
			putF16(data[b:], scales[r.IntN(len(scales))])
			for j := 2; j < bs; j++ {
				if typ == Q4_0 {
					data[b+j] = []byte{0x00, 0xff, 0x0f, 0xf0}[r.IntN(4)]
				} else {
					data[b+j] = []byte{0x80, 0x7f}[r.IntN(2)]
				}
			}
		}
		m := Matrix{Type: typ, Rows: rows, Cols: cols, Data: data}
		for na := 1; na <= maxRowActs; na++ {
			ra := growAligned(nil, na*nb*raBlock)
			want := make([]float32, na*rows)
			for ri := range na {
				a := make([]byte, nb*q8_0Bytes)
				for b := 0; b < len(a); b += q8_0Bytes {
					putF16(a[b:], scales[r.IntN(len(scales))])
					for j := 2; j < q8_0Bytes; j++ {
						a[b+j] = []byte{0x80, 0x7f, 0x81, 0x00}[r.IntN(4)]
					}
				}
				packRowVNNI(a, ra[ri*raBlock:], na*raBlock)
				for i := range rows {
					want[ri*rows+i] = VecDot(typ, cols, m.Row(i), a)
				}
			}
			for _, g := range gfniModes() {
				out := make([]float32, na*rows)
				withGFNI(g, func() { rowDotQ8_0x16xN(typ == Q4_0, na, data, m.RowBytes(), nb, ra, na*raBlock, out, rows) })
				assertBits(t, typ.String()+"/acts="+itoa(na), out, want)
				// The same through a transposed tile.
				ws, wq := make([]byte, nb*32), growAligned(nil, nb*512)
				clear(out)
				withGFNI(g, func() {
					packTile16(typ == Q4_0, data, m.RowBytes(), nb, ws, wq)
					rowDotTiled16xN(typ == Q4_0, na, ws, wq, nb, ra, na*raBlock, out, rows)
				})
				assertBits(t, typ.String()+"/tiled/acts="+itoa(na), out, want)
			}
		}
	}
}

// BenchmarkRowActs compares multi-row group limits and activation-row chunks
// across batch sizes, to tune rowActs and rowChunk.
func BenchmarkRowActs(b *testing.B) {
	if cpuSIMD < simdAVX512VNNI {
		b.Skip("no AVX-512 VNNI")
	}
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(5, 6))
	for _, typ := range []DType{Q8_0, Q4_0} {
		m := testMatrix(b, r, typ, 1024, 2816)
		for _, nrows := range benchRowActsN {
			x := randRow(r, nrows*m.Cols)
			out := make([]float32, nrows*m.Rows)
			for _, ra := range benchRowActsA {
				for _, chunk := range benchRowChunks {
					if chunk >= nrows && chunk != benchRowChunks[0] {
						continue
					}
					name := typ.String() + "/nrows=" + itoa(nrows) + "/acts=" + itoa(ra) + "/chunk=" + itoa(chunk)
					b.Run(name, func(b *testing.B) {
						withRowActs(ra, chunk, func() {
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
	}
}

var (
	benchRowActsN  = []int{2, 4, 6, 8, 12, 16, 17, 18, 32, 128, 512}
	benchRowActsA  = []int{4, 8, 16, 18}
	benchRowChunks = []int{128, 64, 256, 1 << 20}
)
