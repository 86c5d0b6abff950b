package kernels

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// simdLevels is every kernel level this machine can run, lowest first.
func simdLevels() []simdLevel {
	var ls []simdLevel
	for l := simdGo; l <= cpuSIMD; l++ {
		ls = append(ls, l)
	}
	return ls
}

// withSIMD runs f with MatMul forced to level l.
func withSIMD(l simdLevel, f func()) {
	defer func(old simdLevel) { useSIMD = old }(useSIMD)
	useSIMD = l
	f()
}

// TestMatMulSIMDLevels checks every SIMD level bit for bit against VecDot at
// odd sizes: weight rows not a multiple of any tile, nrows 1..17 (partial
// activation groups), and short to long rows, through pools of 1 and 2.
func TestMatMulSIMDLevels(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []DType{Q8_0, Q4_0} {
		for _, c := range []int{32, 96, 1024, 4352} {
			rows := 8*3 + 5 // three full row tiles and a partial one
			if c == 4352 {
				rows = 13
			}
			m := testMatrix(t, r, typ, rows, c)
			for nrows := 1; nrows <= 17; nrows++ {
				if c == 4352 && nrows%4 != 1 {
					continue
				}
				x := make([]float32, 0, nrows*c)
				for range nrows {
					x = append(x, randRow(r, c)...)
				}
				want := vecDotOut(t, m, x, nrows)
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
}

// TestMatMulSIMDExtreme drives every level with weight quants of -128/127
// (Q4_0 nibbles 0/15) against activations quantized to ±127, mixed signs.
func TestMatMulSIMDExtreme(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	const rows, cols, nrows = 19, 256, 17
	for _, typ := range []DType{Q8_0, Q4_0} {
		bs := typ.TypeSize()
		data := make([]byte, rows*cols/QK*bs)
		for b := 0; b < len(data); b += bs {
			putF16(data[b:], float32(r.IntN(4)+1)*0.25)
			for j := 2; j < bs; j++ {
				switch v := r.IntN(3); {
				case typ == Q4_0:
					data[b+j] = []byte{0x00, 0xff, 0x0f}[v]
				default:
					data[b+j] = []byte{0x80, 0x7f, 0x80}[v]
				}
			}
		}
		m := Matrix{Type: typ, Rows: rows, Cols: cols, Data: data}
		x := make([]float32, nrows*cols)
		for i := range x {
			x[i] = 3
			if r.IntN(2) == 0 {
				x[i] = -3
			}
		}
		want := make([]float32, nrows*rows)
		for ri := range nrows {
			a := mustQuantize(t, Q8_0, x[ri*cols:(ri+1)*cols])
			for i := range rows {
				want[ri*rows+i] = VecDot(typ, cols, m.Row(i), a)
			}
		}
		for _, l := range simdLevels() {
			for n := 1; n <= nrows; n += 4 {
				out := make([]float32, n*rows)
				var s Scratch
				withSIMD(l, func() { MatMul(nil, &s, m, x, n, out) })
				assertBits(t, typ.String()+"/"+l.String(), out, want[:n*rows])
			}
		}
	}
}

// withGFNI runs f with the Q4_0 VNNI row kernel's GFNI variant on or off.
func withGFNI(on bool, f func()) {
	defer func(old bool) { useGFNI = old }(useGFNI)
	useGFNI = on
	f()
}

// gfniModes is every Q4_0 nibble-split variant this machine can run.
func gfniModes() []bool {
	if useGFNI {
		return []bool{false, true}
	}
	return []bool{false}
}

// TestMatMulRowVNNI checks the 16-row VNNI row kernels (1–12 activation
// rows) bit for bit against VecDot: weight rows around multiples of
// 16 (partial tiles falling to the 8-row AVX2 kernel and the Go dot), rows
// of 1 to 136 blocks, both Q4_0 variants, through pools of 1 and 2.
func TestMatMulRowVNNI(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(25, 26))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []DType{Q8_0, Q4_0} {
		for _, c := range []int{32, 64, 160, 1024, 2816, 4352} {
			for _, rows := range []int{5, 16, 23, 24, 40, 61} {
				m := testMatrix(t, r, typ, rows, c)
				for nrows := 1; nrows <= 12; nrows++ {
					x := randRow(r, nrows*c)
					want := vecDotOut(t, m, x, nrows)
					for _, g := range gfniModes() {
						for _, pool := range []*Pool{nil, p} {
							out := make([]float32, nrows*rows)
							var s Scratch
							withGFNI(g, func() {
								withSIMD(simdAVX512VNNI, func() { MatMul(pool, &s, m, x, nrows, out) })
							})
							what := typ.String() + "/" + itoa(c) + "/rows=" + itoa(rows) + "/nrows=" + itoa(nrows)
							if g {
								what += "/gfni"
							}
							assertBits(t, what, out, want)
						}
					}
				}
			}
		}
	}
}

// TestRowVNNIExtreme drives the 16-row kernel directly with every weight
// quant at its extremes (Q8_0 -128/127, Q4_0 nibbles 0/15) against
// activation quants of -128/127 (beyond the quantizer's ±127), large and
// tiny scales, and compares with VecDot bit for bit.
func TestRowVNNIExtreme(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(27, 28))
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
		a := make([]byte, nb*q8_0Bytes)
		for b := 0; b < len(a); b += q8_0Bytes {
			putF16(a[b:], scales[r.IntN(len(scales))])
			for j := 2; j < q8_0Bytes; j++ {
				a[b+j] = []byte{0x80, 0x7f, 0x81, 0x00}[r.IntN(4)]
			}
		}
		ra := growAligned(nil, nb*raBlock)
		packRowVNNI(a, ra, raBlock)
		want := make([]float32, rows)
		for i := range rows {
			want[i] = VecDot(typ, cols, m.Row(i), a)
		}
		for _, g := range gfniModes() {
			var out [16]float32
			withGFNI(g, func() { rowDotQ8_0x16(typ == Q4_0, data, m.RowBytes(), nb, ra, &out) })
			assertBits(t, typ.String(), out[:], want)
		}
	}
}

// BenchmarkMatMulSIMD measures weight bytes/s of each level at the shapes of
// a small MoE expert (1024×2816 and 2816×1024).
func BenchmarkMatMulSIMD(b *testing.B) {
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(2, 2))
	for _, typ := range []DType{Q8_0, Q4_0} {
		for _, shape := range [][2]int{{1024, 2816}, {2816, 1024}} {
			m := testMatrix(b, r, typ, shape[0], shape[1])
			for _, nrows := range []int{1, 4, 64, 256} {
				x := randRow(r, nrows*m.Cols)
				out := make([]float32, nrows*m.Rows)
				for _, l := range simdLevels() {
					name := typ.String() + "/" + itoa(shape[0]) + "x" + itoa(shape[1]) + "/nrows=" + itoa(nrows) + "/" + l.String()
					b.Run(name, func(b *testing.B) {
						if l == simdGo && nrows > 4 && testing.Short() {
							b.Skip("slow")
						}
						withSIMD(l, func() {
							var s Scratch
							MatMul(p, &s, m, x, nrows, out)
							b.ReportAllocs()
							b.SetBytes(int64(len(m.Data)))
							b.ResetTimer()
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

var _ = math.Float32bits

// BenchmarkMatMulDecodeDRAM measures decode (nrows = 1) weight streaming from
// memory rather than cache: it cycles through 128 copies of a 1024×2816
// matrix (≈370 MB for Q8_0), more than the last-level cache, on 2 threads.
func BenchmarkMatMulDecodeDRAM(b *testing.B) {
	if testing.Short() {
		b.Skip("allocates hundreds of MB")
	}
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(3, 3))
	for _, typ := range []DType{Q8_0, Q4_0} {
		one := testMatrix(b, r, typ, 1024, 2816)
		const copies = 128
		big := make([]byte, copies*len(one.Data))
		for i := range copies {
			copy(big[i*len(one.Data):], one.Data)
		}
		x := randRow(r, one.Cols)
		out := make([]float32, one.Rows)
		for _, l := range simdLevels() {
			for _, gfni := range gfniModes() {
				name := typ.String() + "/" + l.String()
				if gfni != useGFNI {
					name += "-nogfni"
				}
				if (typ != Q4_0 || l < simdAVX512VNNI) && gfni != useGFNI {
					continue
				}
				b.Run(name, func(b *testing.B) {
					withGFNI(gfni, func() {
						withSIMD(l, func() {
							var s Scratch
							b.SetBytes(int64(len(one.Data)))
							i := 0
							for b.Loop() {
								m := one
								m.Data = big[i*len(one.Data) : (i+1)*len(one.Data)]
								MatMul(p, &s, m, x, 1, out)
								i = (i + 1) % copies
							}
						})
					})
				})
			}
		}
	}
}

// BenchmarkRowKernel measures the row kernels alone, single-threaded, on
// 512 weight rows of 1024 (in L2): the AVX2 kernel (8 rows per call) and
// the VNNI kernel (16 rows per call) where the CPU has it.
func BenchmarkRowKernel(b *testing.B) {
	if cpuSIMD < simdAVX2 {
		b.Skip("no SIMD kernels")
	}
	r := rand.New(rand.NewPCG(5, 5))
	const rows, cols = 512, 1024
	for _, typ := range []DType{Q8_0, Q4_0} {
		m := testMatrix(b, r, typ, rows, cols)
		a := mustQuantize(b, Q8_0, randRow(r, cols))
		ra := growAligned(nil, cols/QK*raBlock)
		packRowVNNI(a, ra, raBlock)
		nb, st, q4 := cols/QK, m.RowBytes(), typ == Q4_0
		b.Run(typ.String()+"/avx2", func(b *testing.B) {
			var out [8]float32
			b.SetBytes(int64(len(m.Data)))
			for b.Loop() {
				for i := 0; i < rows; i += 8 {
					rowDotQ8_0x8(q4, m.Data[i*st:], st, nb, a, &out)
				}
			}
		})
		if cpuSIMD >= simdAVX512VNNI {
			b.Run(typ.String()+"/avx512vnni", func(b *testing.B) {
				var out [16]float32
				b.SetBytes(int64(len(m.Data)))
				for b.Loop() {
					for i := 0; i < rows; i += 16 {
						rowDotQ8_0x16(q4, m.Data[i*st:], st, nb, ra, &out)
					}
				}
			})
		}
	}
}

// TestPackRowVNNI checks the packing kernel against packRowVNNIGo byte for
// byte, with extreme quants (all −128, all 127) and random blocks, at both
// the single-row and the interleaved step.
func TestPackRowVNNI(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	const nb = 37
	a := make([]byte, nb*q8_0Bytes)
	for i := range a {
		a[i] = byte(r.IntN(256))
	}
	for j := 2; j < q8_0Bytes; j++ {
		a[j], a[q8_0Bytes+j] = 0x80, 0x7f
	}
	for _, step := range []int{raBlock, 3 * raBlock} {
		want := make([]byte, nb*step)
		packRowVNNIGo(a, want, step)
		for _, l := range simdLevels() {
			got := make([]byte, nb*step)
			withSIMD(l, func() { packRowVNNI(a, got, step) })
			for b := range nb {
				if !bytes.Equal(got[b*step:b*step+52], want[b*step:b*step+52]) {
					t.Fatalf("%s step %d block %d:\n got %x\nwant %x", l, step, b, got[b*step:b*step+52], want[b*step:b*step+52])
				}
			}
		}
	}
}
