package kernels

import (
	"encoding/binary"
	"math"
)

// MatMul for F16 and F32 weights. Activations stay float32 and every output
// is a dot product in the defined 16-lane order of DotF32 (see attn.go):
// the pure-Go VecDot (dotF16, dotF32) and the AVX2 tile kernel (4 weight
// rows × 1 activation row, and for batches 1 weight row × 6 activation rows;
// columns in multiples of 16, the rest added in order in Go) and the AVX-512
// kernels (floatTiles512) compute exactly the same float32 operations, so
// outputs are bit-identical across levels, tiles, batches and thread counts.

// floatTile is the number of weight rows per float tile-kernel call: the
// activation row is loaded once for all of them, and the tile's weights stay
// in L1 while a batch's activation rows pass over them.
const floatTile = 4

// floatBatch is the number of activation rows per batch-kernel call (one
// weight row, converted once for all of them); batches of floatBatch or more
// rows go through it, the rest through the tile kernel.
const floatBatch = 6

// AVX-512 float path (simdAVX512VNNI level): tiles of floatTile512 weight
// rows; batches of up to floatDecode512 rows take the 8×1 kernel per
// activation row, larger ones the 4×(1..floatActs512) kernels over blocks of
// floatActBlock activation rows (kept in L2 while the thread's weight tiles
// pass over them).
const (
	floatTile512   = 8
	floatActs512   = 6 // must match asmgen
	floatDecode512 = 1
	floatActBlock  = 48
)

// simdFloat reports whether MatMul takes the SIMD float path for m.
func simdFloat(m Matrix) bool {
	return useSIMD >= simdAVX2 && (m.Type == F16 || m.Type == F32)
}

// matMulSIMDFloat runs the SIMD float path once s holds the call state. It
// reads the activations from s.x directly (no conversion pass).
func (s *Scratch) matMulSIMDFloat(p *Pool) {
	tile, fn := floatTile, s.floatFn
	if useSIMD >= simdAVX512VNNI {
		tile, fn = floatTile512, s.float512Fn
	}
	tiles := (s.m.Rows + tile - 1) / tile
	if p == nil {
		fn(0, tiles)
		return
	}
	p.Run(tiles, fn)
}

// floatTiles512 computes weight-row tiles [lo, hi) of floatTile512 rows
// against every activation row with the AVX-512 kernels; columns past the
// last multiple of 16 are added in order in Go, and rows that do not fill a
// tile are computed 4 at a time, then in Go.
func (s *Scratch) floatTiles512(lo, hi int) {
	m, cols := s.m, s.m.Cols
	f16 := m.Type == F16
	n16 := cols &^ 15
	// tail adds columns n16.. of weight row i and activation row r to the
	// kernel's output, in order.
	tail := func(i, r int) {
		if n16 == cols {
			return
		}
		wr := m.Data[i*s.wRow : (i+1)*s.wRow]
		a := s.x[r*cols : (r+1)*cols]
		acc := s.out[r*m.Rows+i]
		for c := n16; c < cols; c++ {
			acc += float32(a[c] * floatAt(f16, wr, c))
		}
		s.out[r*m.Rows+i] = acc
	}
	goRow := func(i int) {
		w := m.Data[i*s.wRow : (i+1)*s.wRow]
		for r := range s.nrows {
			s.out[r*m.Rows+i] = dotFloatRow(f16, w, s.x[r*cols:(r+1)*cols])
		}
	}
	// quad computes weight rows i0..i0+3 against activation rows [r0, r1).
	quad := func(i0, r0, r1 int) {
		w := m.Data[i0*s.wRow:]
		for r := r0; r < r1; r += floatActs512 {
			na := min(floatActs512, r1-r)
			dotFloat4xN(f16, na, w, s.wRow, n16, s.x[r*cols:], cols, s.out[r*m.Rows+i0:], m.Rows)
			for k := range na {
				for i := range 4 {
					tail(i0+i, r+k)
				}
			}
		}
	}
	// partial computes the partial last tile from weight row i0: 4 rows with
	// the kernel if there are, the rest in Go.
	partial := func(i0 int) {
		i := i0
		if i+4 <= m.Rows {
			quad(i, 0, s.nrows)
			i += 4
		}
		for ; i < m.Rows; i++ {
			goRow(i)
		}
	}
	if n16 == 0 {
		for i := lo * floatTile512; i < min(hi*floatTile512, m.Rows); i++ {
			goRow(i)
		}
		return
	}
	if s.nrows <= floatDecode512 {
		for t := lo; t < hi; t++ {
			i0 := t * floatTile512
			if i0+floatTile512 > m.Rows {
				partial(i0)
				continue
			}
			w := m.Data[i0*s.wRow:]
			for r := range s.nrows {
				dotFloat8x1(f16, w, s.wRow, n16, s.x[r*cols:(r+1)*cols], s.out[r*m.Rows+i0:])
				for i := range floatTile512 {
					tail(i0+i, r)
				}
			}
		}
		return
	}
	for r0 := 0; r0 < s.nrows; r0 += floatActBlock {
		r1 := min(r0+floatActBlock, s.nrows)
		for t := lo; t < hi; t++ {
			i0 := t * floatTile512
			if i0+floatTile512 > m.Rows {
				if r0 == 0 {
					partial(i0)
				}
				continue
			}
			quad(i0, r0, r1)
			quad(i0+4, r0, r1)
		}
	}
}

// floatTiles computes weight-row tiles [lo, hi) against every activation
// row; a partial last tile is computed row by row in Go.
func (s *Scratch) floatTiles(lo, hi int) {
	m, cols := s.m, s.m.Cols
	f16 := m.Type == F16
	n16 := cols &^ 15
	var res [floatTile]float32
	var res6 [floatBatch]float32
	for t := lo; t < hi; t++ {
		i0 := t * floatTile
		if i0+floatTile > m.Rows || n16 == 0 {
			for i := i0; i < min(i0+floatTile, m.Rows); i++ {
				w := m.Data[i*s.wRow : (i+1)*s.wRow]
				for r := range s.nrows {
					s.out[r*m.Rows+i] = dotFloatRow(f16, w, s.x[r*cols:(r+1)*cols])
				}
			}
			continue
		}
		w := m.Data[i0*s.wRow : (i0+floatTile)*s.wRow]
		r := 0
		for ; r+floatBatch <= s.nrows; r += floatBatch {
			a := s.x[r*cols : (r+floatBatch)*cols]
			for i := range floatTile {
				wr := w[i*s.wRow : (i+1)*s.wRow]
				dotFloatx1x6(f16, wr, n16, a, 4*cols, &res6)
				for k, acc := range res6 {
					ak := a[k*cols : (k+1)*cols]
					for c := n16; c < cols; c++ {
						acc += float32(ak[c] * floatAt(f16, wr, c))
					}
					s.out[(r+k)*m.Rows+i0+i] = acc
				}
			}
		}
		for ; r < s.nrows; r++ {
			a := s.x[r*cols : (r+1)*cols]
			dotFloatx4(f16, w, s.wRow, n16, a, &res)
			o := s.out[r*m.Rows+i0 : r*m.Rows+i0+floatTile]
			for i := range res {
				acc := res[i]
				wr := w[i*s.wRow : (i+1)*s.wRow]
				for c := n16; c < cols; c++ {
					acc += float32(a[c] * floatAt(f16, wr, c))
				}
				o[i] = acc
			}
		}
	}
}

// floatAt returns element c of an F16 or F32 row.
func floatAt(f16 bool, w []byte, c int) float32 {
	if f16 {
		return f16Table[binary.LittleEndian.Uint16(w[2*c:])]
	}
	return math.Float32frombits(binary.LittleEndian.Uint32(w[4*c:]))
}

// dotFloatRow is DotF32(a, weight row w) for an F16 or F32 row, in Go.
func dotFloatRow(f16 bool, w []byte, a []float32) float32 {
	n := len(a)
	m := n &^ 15
	var s [16]float32
	for i := 0; i < m; i += 16 {
		x := (*[16]float32)(a[i:])
		if f16 {
			y := (*[32]byte)(w[2*i:])
			for j := range s {
				s[j] += float32(x[j] * f16Table[binary.LittleEndian.Uint16(y[2*j:])])
			}
		} else {
			y := (*[64]byte)(w[4*i:])
			for j := range s {
				s[j] += float32(x[j] * math.Float32frombits(binary.LittleEndian.Uint32(y[4*j:])))
			}
		}
	}
	sum := reduceLanes(&s)
	for c := m; c < n; c++ {
		sum += float32(a[c] * floatAt(f16, w, c))
	}
	return sum
}

// dotFloatBytes is dotFloatRow with the activations as little-endian
// float32 bytes (VecDot's form).
func dotFloatBytes(f16 bool, n int, w, a []byte) float32 {
	m := n &^ 15
	var s [16]float32
	for i := 0; i < m; i += 16 {
		x := (*[64]byte)(a[4*i:])
		if f16 {
			y := (*[32]byte)(w[2*i:])
			for j := range s {
				s[j] += float32(math.Float32frombits(binary.LittleEndian.Uint32(x[4*j:])) * f16Table[binary.LittleEndian.Uint16(y[2*j:])])
			}
		} else {
			y := (*[64]byte)(w[4*i:])
			for j := range s {
				s[j] += float32(math.Float32frombits(binary.LittleEndian.Uint32(x[4*j:])) * math.Float32frombits(binary.LittleEndian.Uint32(y[4*j:])))
			}
		}
	}
	sum := reduceLanes(&s)
	for c := m; c < n; c++ {
		sum += float32(math.Float32frombits(binary.LittleEndian.Uint32(a[4*c:])) * floatAt(f16, w, c))
	}
	return sum
}
