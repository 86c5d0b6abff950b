package kernels

import (
	"sync/atomic"
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

// PackTiles returns m's full 16-row tiles packed for Matrix.Tiles, built on
// the pool (p may be nil), or nil when TilesUseful(m) is false. It reads the
// rows of those tiles from m.Data (MatMul still reads the rows past the
// last full tile from Data).
func PackTiles(p *Pool, m Matrix) []byte {
	if !TilesUseful(m) {
		return nil
	}
	nb, wRow := m.Cols/QK, m.RowBytes()
	if len(m.Data) < m.Rows*wRow {
		panic("kernels: PackTiles: matrix data too short")
	}
	ts := tileStride(nb)
	nt := m.Rows / rowTile16
	out := growAligned(nil, nt*ts)
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
