package kernels

import (
	"sync/atomic"
	"unsafe"
)

// Tiles holds an optional copy of a Q8_0 matrix's full 16-row tiles,
// transposed as the multi-row VNNI kernels use them (packTile16), so that
// MatMul streams them as they are instead of loading, offsetting and
// transposing every block on every call: a decode step's experts, a few
// activation rows each, mostly wait on that work while the weights stream
// in. The copy is the size of the Q8_0 data. A holder is shared by every
// copy of the Matrix value that points to it; Store and Load are safe
// while MatMul runs, so a node can add and drop copies as the experts it
// hosts change. The zero value holds nothing.
type Tiles struct{ p atomic.Pointer[[]byte] }

// Load returns the packed tiles, or nil.
func (t *Tiles) Load() []byte {
	if t == nil {
		return nil
	}
	if b := t.p.Load(); b != nil {
		return *b
	}
	return nil
}

// Store sets the packed tiles (nil drops them). b must come from PackTiles
// for the matrix t belongs to.
func (t *Tiles) Store(b []byte) {
	if b == nil {
		t.p.Store(nil)
		return
	}
	t.p.Store(&b)
}

// TilesUseful reports whether MatMul would use packed tiles of m on this
// CPU: m is Q8_0 with at least 16 rows and the AVX-512 VNNI kernels run.
func TilesUseful(m Matrix) bool {
	return useSIMD >= simdAVX512VNNI && m.Type == Q8_0 && m.Rows >= rowTile16 && m.Cols > 0 && m.Cols%QK == 0
}

// tileStride is the bytes of one packed tile of nb blocks: the scales
// (32 bytes a block, padded to 64) then the quants (512 a block).
func tileStride(nb int) int { return (nb*32+63)&^63 + nb*512 }

// TilesLen is the bytes of m's packed tiles: 0 when TilesUseful(m) is
// false.
func TilesLen(m Matrix) int {
	if !TilesUseful(m) {
		return 0
	}
	return m.Rows / rowTile16 * tileStride(m.Cols/QK)
}

// PackTiles returns m's full 16-row tiles packed for Matrix.Tiles, built on
// the pool (p may be nil) in memory from AllocHuge, or nil when
// TilesUseful(m) is false. It reads the rows of those tiles from m.Data
// (MatMul still reads the rows past the last full tile from Data).
func PackTiles(p *Pool, m Matrix) []byte {
	return PackTilesInto(p, m, AllocHuge(TilesLen(m)))
}

// PackTilesInto is PackTiles into dst, TilesLen(m) bytes starting on a
// 64-byte boundary (a piece of an AllocHuge buffer shared by several
// matrices, so that more of them lie on huge pages). It returns dst, or
// nil when TilesUseful(m) is false.
func PackTilesInto(p *Pool, m Matrix, dst []byte) []byte {
	if !TilesUseful(m) {
		return nil
	}
	nb, wRow := m.Cols/QK, m.RowBytes()
	if len(m.Data) < m.Rows*wRow {
		panic("kernels: PackTiles: matrix data too short")
	}
	ts := tileStride(nb)
	nt := m.Rows / rowTile16
	if len(dst) != nt*ts || uintptr(unsafe.Pointer(unsafe.SliceData(dst)))&63 != 0 {
		panic("kernels: PackTilesInto: destination not TilesLen bytes on a 64-byte boundary")
	}
	out := dst[:len(dst):len(dst)] // the holder never reaches a neighbour's bytes
	pack := func(lo, hi int) {
		for t := lo; t < hi; t++ {
			tile := out[t*ts : (t+1)*ts]
			packTile16(false, m.Data[t*rowTile16*wRow:], wRow, nb, tile[:nb*32], tile[ts-nb*512:])
		}
	}
	if p == nil {
		pack(0, nt)
	} else {
		p.Run(nt, pack)
	}
	return out
}

// hugePage is the size of a transparent huge page on x86-64 Linux.
const hugePage = 2 << 20

// hugeAlignMin is the smallest buffer AllocHuge aligns to a huge page (at
// most a quarter of it slack).
const hugeAlignMin = 4 * hugePage

// AllocHuge returns n bytes (n rounded up to a multiple of 64) for data
// the kernels stream (packed tiles, a KV cache), starting on a 64-byte
// boundary, with its whole 2 MiB pages offered to the kernel's transparent
// huge pages (madvise MADV_HUGEPAGE on Linux), so the data streams without
// a TLB miss every 4 KiB: packed tiles 4–10 % faster from DRAM at 1–16 rows
// (a 1024×2816 matrix cycled over 576 MB, 2 threads, medians of 30
// alternating rounds).
//
// A buffer of hugeAlignMin bytes or more is over-allocated by 2 MiB so
// that it starts on a 2 MiB boundary and every page of it but the last
// can be huge; smaller ones get the huge pages that fall inside them. The
// slack is not part of the buffer: memory fresh from the OS leaves it
// untouched, but where the Go heap reuses memory it zeroes the whole
// allocation first, slack included (and the pages are then written before
// the advice, so they become huge only when khugepaged collapses them).
// Each advised range is its own memory mapping (VMA) in the kernel, so
// callers should allocate few, large buffers: a node's weights are grouped
// by expert.
func AllocHuge(n int) []byte {
	if n <= 0 {
		return nil
	}
	n = (n + 63) &^ 63
	if n < hugeAlignMin {
		b := growAligned(nil, n)[:n:n]
		adviseHuge(b)
		return b
	}
	buf := make([]byte, n+hugePage)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(buf))) & (hugePage - 1))
	b := buf[off : off+n : off+n]
	adviseHuge(b)
	return b
}

// adviseHuge offers the whole huge pages inside b to transparent huge
// pages (a no-op where the OS has none).
func adviseHuge(b []byte) {
	if len(b) < hugePage {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := int(-start & (hugePage - 1))
	hi := lo + (len(b)-lo)&^(hugePage-1)
	if hi > lo {
		madviseHuge(b[lo:hi])
	}
}
