package kernels

import (
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestMatMulPackedTiles checks MatMul and MatMulBatch on matrices carrying
// packed tiles bit for bit against VecDot: 1–20 activation rows (one row
// and every group size), weight rows with and without a partial last tile,
// odd and even block counts, group limits 4 and 18, pools of 1 and 2; and
// that dropping the tiles falls back to Data.
func TestMatMulPackedTiles(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(51, 52))
	p := NewPool(2)
	defer p.Close()
	for _, c := range []int{32, 96, 1024} {
		for _, rows := range []int{16, 37} {
			m := testMatrix(t, r, Q8_0, rows, c)
			m.Tiles = new(Tiles)
			m.Tiles.Store(PackTiles(p, m))
			if m.Tiles.Load() == nil {
				t.Fatal("PackTiles packed nothing")
			}
			for nrows := 1; nrows <= 20; nrows++ {
				x := randRow(r, nrows*c)
				want := vecDotOut(t, m, x, nrows)
				for _, ra := range []int{4, 18} {
					for _, pool := range []*Pool{nil, p} {
						what := "cols=" + itoa(c) + "/rows=" + itoa(rows) + "/nrows=" + itoa(nrows) + "/acts=" + itoa(ra)
						out, out2 := make([]float32, nrows*rows), make([]float32, nrows*rows)
						var s, s1, s2 Scratch
						var b MatMulBatch
						withRowActs(ra, 8, func() {
							MatMul(pool, &s, m, x, nrows, out)
							assertBits(t, what, out, want)
							plain := m
							plain.Tiles = nil
							b.Run(pool, []MatMulJob{{S: &s1, M: m, X: x, NRows: nrows, Out: out}, {S: &s2, M: plain, X: x, NRows: nrows, Out: out2}})
							assertBits(t, what+"/batch", out, want)
							assertBits(t, what+"/batch-plain", out2, want)
							// The untiled job first: the tiled one reads its packing.
							clear(out)
							clear(out2)
							b.Run(pool, []MatMulJob{{S: &s2, M: plain, X: x, NRows: nrows, Out: out2}, {S: &s1, M: m, X: x, NRows: nrows, Out: out}})
						})
						assertBits(t, what+"/batch", out, want)
						assertBits(t, what+"/batch-plain", out2, want)
					}
				}
			}
			m.Tiles.Store(nil)
			x := randRow(r, 3*c)
			out := make([]float32, 3*rows)
			var s Scratch
			MatMul(p, &s, m, x, 3, out)
			a := mustQuantize(t, Q8_0, x[2*c:])
			if got, want := out[2*rows+rows-1], VecDot(Q8_0, c, m.Row(rows-1), a); got != want {
				t.Fatalf("after dropping tiles: %v, want %v", got, want)
			}
		}
	}
	if PackTiles(nil, testMatrix(t, r, Q4_0, 16, 64)) != nil {
		t.Error("PackTiles packed a Q4_0 matrix")
	}
}

// BenchmarkPackedTilesDRAM compares packed tiles with the row layout for a
// decode step's few rows, cycling through 96 copies of a 1024×2816 Q8_0
// matrix (≈290 MB, past the last-level cache) on 2 threads.
func BenchmarkPackedTilesDRAM(b *testing.B) {
	if cpuSIMD < simdAVX512VNNI {
		b.Skip("no AVX-512 VNNI")
	}
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(3, 3))
	one := testMatrix(b, r, Q8_0, 1024, 2816)
	const copies = 96
	ms := tileCopies(p, one, copies, growAligned(nil, copies*len(PackTiles(p, one))), true)
	for _, nrows := range []int{1, 2, 4, 8, 16} {
		x := randRow(r, nrows*one.Cols)
		out := make([]float32, nrows*one.Rows)
		for _, packed := range []bool{false, true} {
			name := "nrows=" + itoa(nrows) + "/rows"
			if packed {
				name = "nrows=" + itoa(nrows) + "/tiles"
			}
			b.Run(name, func(b *testing.B) {
				var s Scratch
				b.SetBytes(int64(len(one.Data)))
				i := 0
				for b.Loop() {
					m := ms[i]
					if !packed {
						m.Tiles = nil
					}
					MatMul(p, &s, m, x, nrows, out)
					i = (i + 1) % copies
				}
			})
		}
	}
}

// tileCopies returns copies of m whose packed tiles lie one after another in
// big (and, with rows, whose row data lie in copies of their own).
func tileCopies(p *Pool, m Matrix, copies int, big []byte, rows bool) []Matrix {
	packed := PackTiles(p, m)
	var data []byte
	if rows {
		data = make([]byte, copies*len(m.Data))
	}
	ms := make([]Matrix, copies)
	for i := range ms {
		ms[i] = m
		if rows {
			ms[i].Data = data[i*len(m.Data) : (i+1)*len(m.Data)]
			copy(ms[i].Data, m.Data)
		}
		t := big[i*len(packed) : (i+1)*len(packed)]
		copy(t, packed)
		ms[i].Tiles = new(Tiles)
		ms[i].Tiles.Store(t)
	}
	return ms
}

// BenchmarkTilesDRAMThreads streams packed tiles from DRAM (192 copies of a
// 1024×2816 Q8_0 matrix, 577 MB in huge pages, well past the 300 MB
// last-level cache) with one and four activation rows on one and two
// threads: four rows stream more slowly than one (docs/performance.md).
func BenchmarkTilesDRAMThreads(b *testing.B) {
	if cpuSIMD < simdAVX512VNNI {
		b.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(3, 3))
	one := testMatrix(b, r, Q8_0, 1024, 2816)
	p0 := NewPool(2)
	n := len(PackTiles(p0, one))
	const copies = 192
	ms := tileCopies(p0, one, copies, AllocHuge(copies*n), false)
	p0.Close()
	for _, threads := range []int{1, 2} {
		p := NewPool(threads)
		for _, nrows := range []int{1, 4} {
			x := randRow(r, nrows*one.Cols)
			out := make([]float32, nrows*one.Rows)
			b.Run("threads="+itoa(threads)+"/nrows="+itoa(nrows), func(b *testing.B) {
				var s Scratch
				b.SetBytes(int64(n))
				i := 0
				for b.Loop() {
					MatMul(p, &s, ms[i], x, nrows, out)
					i = (i + 1) % copies
				}
			})
		}
		p.Close()
	}
}

// TestTilesSwapWhileComputing stores and drops a matrix's tiles while
// MatMul runs on it, as a node does when its hosted experts change: every
// result stays bit-identical (run with -race to check the holder).
func TestTilesSwapWhileComputing(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(53, 54))
	p := NewPool(2)
	defer p.Close()
	m := testMatrix(t, r, Q8_0, 64, 256)
	m.Tiles = new(Tiles)
	packed := PackTiles(nil, m)
	const nrows = 3
	x := randRow(r, nrows*m.Cols)
	want := make([]float32, nrows*m.Rows)
	var s Scratch
	MatMul(nil, &s, m, x, nrows, want)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			if i%2 == 0 {
				m.Tiles.Store(packed)
			} else {
				m.Tiles.Store(nil)
			}
		}
	}()
	out := make([]float32, nrows*m.Rows)
	for range 200 {
		MatMul(p, &s, m, x, nrows, out)
		assertBits(t, "while swapping", out, want)
	}
	<-done
}

// TestAllocHuge checks the tile buffers' sizes and alignment: 64 bytes
// always, a 2 MiB start from hugeAlignMin up.
func TestAllocHuge(t *testing.T) {
	if AllocHuge(0) != nil {
		t.Error("AllocHuge(0) is not nil")
	}
	for _, n := range []int{1, 64, 100, hugePage - 1, hugePage + 64, 2 * hugePage, hugeAlignMin, 5*hugePage + 192} {
		b := AllocHuge(n)
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		switch {
		case len(b) != (n+63)&^63 || cap(b) != len(b):
			t.Errorf("AllocHuge(%d): len %d cap %d", n, len(b), cap(b))
		case addr&63 != 0:
			t.Errorf("AllocHuge(%d) at %#x: not 64-byte aligned", n, addr)
		case n >= hugeAlignMin && addr&(hugePage-1) != 0:
			t.Errorf("AllocHuge(%d) at %#x: not on a huge page boundary", n, addr)
		}
		b[len(b)-1] = 1 // writable to the end
	}
}

// TestGrowScratch checks the scratch buffers' growth: kept while large
// enough, a quarter to spare when reallocated, 64-byte aligned, on a huge
// page boundary from hugeAlignMin on.
func TestGrowScratch(t *testing.T) {
	for _, n := range []int{1, 100, hugePage, hugeAlignMin - 1, hugeAlignMin, 5*hugePage + 4} {
		b := growScratch(nil, n)
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		switch {
		case len(b) != n || cap(b) < n+n/4:
			t.Errorf("growScratch(nil, %d): len %d cap %d", n, len(b), cap(b))
		case addr&63 != 0:
			t.Errorf("growScratch(nil, %d) at %#x: not 64-byte aligned", n, addr)
		case n+n/4 >= hugeAlignMin && addr&(hugePage-1) != 0:
			t.Errorf("growScratch(nil, %d) at %#x: not on a huge page boundary", n, addr)
		}
		b[n-1] = 7
		if c := growScratch(b, n/2+1); unsafe.SliceData(c) != unsafe.SliceData(b) || len(c) != n/2+1 {
			t.Errorf("growScratch(%d-byte buffer, %d) reallocated", n, n/2+1)
		}
		if c := growScratch(b, cap(b)+1); unsafe.SliceData(c) == unsafe.SliceData(b) || len(c) != cap(b)+1 {
			t.Errorf("growScratch past the capacity %d did not reallocate", cap(b))
		}
	}
	f := GrowFloats(nil, 1000)
	if len(f) != 1000 || cap(f) < 1250 || uintptr(unsafe.Pointer(unsafe.SliceData(f)))&63 != 0 {
		t.Errorf("GrowFloats(nil, 1000): len %d cap %d", len(f), cap(f))
	}
	f[999] = 1
	if g := GrowFloats(f, 1200); &g[0] != &f[0] || g[999] != 1 {
		t.Error("GrowFloats within the capacity reallocated")
	}
}

// TestPackTilesInto packs several matrices into one AllocHuge buffer, as a
// node packs an expert's three, and checks MatMul on each bit for bit
// against VecDot; a destination of the wrong size or alignment panics.
func TestPackTilesInto(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	r := rand.New(rand.NewPCG(61, 62))
	p := NewPool(2)
	defer p.Close()
	ms := []Matrix{testMatrix(t, r, Q8_0, 48, 96), testMatrix(t, r, Q8_0, 37, 64), testMatrix(t, r, Q8_0, 8, 64), testMatrix(t, r, Q8_0, 32, 96)}
	total := 0
	for _, m := range ms {
		total += TilesLen(m)
	}
	if TilesLen(ms[2]) != 0 {
		t.Errorf("TilesLen of an 8-row matrix is %d, want 0", TilesLen(ms[2]))
	}
	buf := AllocHuge(total)
	for i := range ms {
		n := TilesLen(ms[i])
		ms[i].Tiles = new(Tiles)
		ms[i].Tiles.Store(PackTilesInto(p, ms[i], buf[:n:n]))
		buf = buf[n:]
	}
	var s Scratch
	for i, m := range ms {
		for _, nrows := range []int{1, 5} {
			x := randRow(r, nrows*m.Cols)
			want := make([]float32, nrows*m.Rows)
			for row := range nrows {
				a := mustQuantize(t, Q8_0, x[row*m.Cols:(row+1)*m.Cols])
				for j := range m.Rows {
					want[row*m.Rows+j] = VecDot(m.Type, m.Cols, m.Row(j), a)
				}
			}
			got := make([]float32, nrows*m.Rows)
			MatMul(p, &s, m, x, nrows, got)
			assertBits(t, "matrix "+itoa(i)+"/nrows="+itoa(nrows), got, want)
		}
	}
	for name, dst := range map[string][]byte{"short": AllocHuge(TilesLen(ms[0]) - 64), "misaligned": AllocHuge(TilesLen(ms[0]) + 64)[8 : 8+TilesLen(ms[0])]} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("PackTilesInto into a %s destination did not panic", name)
				}
			}()
			PackTilesInto(nil, ms[0], dst)
		}()
	}
}
