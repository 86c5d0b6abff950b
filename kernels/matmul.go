package kernels

import "fmt"

// Matrix is a weight matrix as stored in GGUF: Rows rows of Cols elements
// each, row-major, in type Type. Data holds at least Rows·Type.RowSize(Cols)
// bytes (it usually aliases a memory-mapped file and is never written).
type Matrix struct {
	Type       DType
	Rows, Cols int
	Data       []byte
	// Tiles, when not nil, may hold the matrix's tiles packed by PackTiles,
	// which MatMul then reads instead of their rows of Data (rows past the
	// last full tile still come from Data; the results are the same).
	Tiles *Tiles
}

// RowBytes is the byte length of one row.
func (m Matrix) RowBytes() int {
	rs, err := m.Type.RowSize(m.Cols)
	if err != nil {
		panic("kernels: Matrix: " + err.Error())
	}
	return rs
}

// Row returns the bytes of row i (0 ≤ i < Rows), aliasing Data.
func (m Matrix) Row(i int) []byte {
	rs := m.RowBytes()
	return m.Data[i*rs : (i+1)*rs : (i+1)*rs]
}

// Scratch is the caller-owned working memory of MatMul: the activation rows
// converted to the weight type's VecDotType, and the per-call state the
// workers read. The zero value is ready to use; it grows to the largest call
// and is then reused, so steady-state MatMul calls do not allocate. A Scratch
// must not be used by two MatMul calls at once.
type Scratch struct {
	act []byte

	// Packed Q8_0 activations (see matmul_q8.go): lanes rows per int64, and
	// each row's block scales.
	packed []int64
	ascale []float32

	// State of the call in progress, read by the workers.
	m       Matrix
	x       []float32
	out     []float32
	nrows   int
	vt      DType
	actRow  int // bytes per converted activation row
	wRow    int // bytes per weight row
	dot     dotFunc
	self    *Scratch // detects a copied Scratch, whose bound funcs would point at the original
	quantFn func(lo, hi int)
	dotFn   func(lo, hi int)
	packFn  func(lo, hi int)
	dotPkFn func(lo, hi int)

	// SIMD path (matmul_simd.go): packed VNNI activation groups and the
	// bound tile functions.
	ra         []byte // packed activation rows of the VNNI row kernel
	raRow      int    // bytes per packed row
	raMulti    bool   // ra interleaves its rows' blocks for the multi-row kernel
	needAct    bool   // some weight rows are past the last 16-row tile: they read act, so packing fills it
	tiles      []byte // m's packed tiles (m.Tiles), if any
	chunks     int    // chunks of activation rows that each meet every tile (chunkCount), on any thread
	rowQPFn    func(lo, hi int)
	row16Fn    func(lo, hi int)
	rowFn      func(lo, hi int)
	floatFn    func(lo, hi int) // F16/F32 tile path (matmul_float.go)
	float512Fn func(lo, hi int) // its AVX-512 twin
}

// MatMul computes out[r·m.Rows+i] = dot(m.Row(i), x[r·m.Cols:(r+1)·m.Cols])
// for every weight row i and each of the nrows activation rows r.
//
// Each activation row is converted once to m.Type.VecDotType() in s, then the
// weight rows are split across the pool (p may be nil for the calling
// goroutine alone). Work is split over output rows only, never over the
// reduction dimension, and each element is computed by VecDot alone, so every
// output element is bit-identical for any thread count and any nrows
// (batch-invariant). MatMul panics if a buffer is too short or m.Type has no
// dot kernel; x and out must not overlap.
func MatMul(p *Pool, s *Scratch, m Matrix, x []float32, nrows int, out []float32) {
	if !s.begin(m, x, nrows, out) {
		return
	}
	switch {
	case simdQ8(m):
		s.matMulSIMDQ8(p)
	case simdFloat(m):
		s.matMulSIMDFloat(p)
	case s.vt == Q8_0:
		ngroups := (nrows + lanes - 1) / lanes
		nb := m.Cols / QK
		s.packed = grow(s.packed, ngroups*m.Cols)
		s.ascale = grow(s.ascale, ngroups*lanes*nb)
		if p == nil {
			s.packQ8Groups(0, ngroups)
			s.dotRowsPacked(0, m.Rows)
		} else {
			p.Run(ngroups, s.packFn)
			p.Run(m.Rows, s.dotPkFn)
		}
	case p == nil:
		s.quantRows(0, nrows)
		s.dotRows(0, m.Rows)
	default:
		p.Run(nrows, s.quantFn)
		p.Run(m.Rows, s.dotFn)
	}
	s.end()
}

// begin checks a MatMul call and loads its state into s; false means there
// is nothing to compute.
func (s *Scratch) begin(m Matrix, x []float32, nrows int, out []float32) bool {
	dot := vecDotFunc(m.Type)
	if dot == nil {
		panic(fmt.Sprintf("kernels: MatMul: no dot kernel for %s", m.Type))
	}
	if nrows <= 0 || m.Rows == 0 {
		return false
	}
	wRow, err := m.Type.RowSize(m.Cols)
	if err != nil {
		panic("kernels: MatMul: " + err.Error())
	}
	vt := m.Type.VecDotType()
	actRow, err := vt.RowSize(m.Cols)
	if err != nil {
		panic("kernels: MatMul: " + err.Error())
	}
	switch {
	case len(m.Data) < m.Rows*wRow:
		panic(fmt.Sprintf("kernels: MatMul: %d×%d %s matrix needs %d bytes, has %d", m.Rows, m.Cols, m.Type, m.Rows*wRow, len(m.Data)))
	case len(x) < nrows*m.Cols:
		panic(fmt.Sprintf("kernels: MatMul: x has %d values, want %d×%d", len(x), nrows, m.Cols))
	case len(out) < nrows*m.Rows:
		panic(fmt.Sprintf("kernels: MatMul: out has %d values, want %d×%d", len(out), nrows, m.Rows))
	case m.Cols == 0:
		clear(out[:nrows*m.Rows]) // empty dot products, for every path
		return false
	}
	if s.self != s {
		s.self = s
		s.quantFn = s.quantRows
		s.dotFn = s.dotRows
		s.packFn = s.packQ8Groups
		s.dotPkFn = s.dotRowsPacked
		s.rowFn = s.rowTiles
		s.rowQPFn = s.quantPackRows
		s.row16Fn = s.rowItems
		s.floatFn = s.floatTiles
		s.float512Fn = s.floatTiles512
	}
	s.act = growScratch(s.act, nrows*actRow)
	s.m, s.x, s.out, s.nrows = m, x, out, nrows
	s.vt, s.actRow, s.wRow, s.dot = vt, actRow, wRow, dot
	return true
}

// end drops references to caller memory so a long-lived Scratch pins
// nothing.
func (s *Scratch) end() {
	s.m, s.x, s.out, s.dot, s.tiles = Matrix{}, nil, nil, nil, nil
}

// quantRows converts activation rows [lo, hi) into s.act.
func (s *Scratch) quantRows(lo, hi int) {
	cols := s.m.Cols
	for r := lo; r < hi; r++ {
		quantizeRow(s.vt, s.x[r*cols:(r+1)*cols], s.act[r*s.actRow:(r+1)*s.actRow])
	}
}

// dotRows computes the outputs of weight rows [lo, hi) for every activation
// row.
func (s *Scratch) dotRows(lo, hi int) {
	m, dot, cols := s.m, s.dot, s.m.Cols
	for i := lo; i < hi; i++ {
		w := m.Data[i*s.wRow : (i+1)*s.wRow]
		for r := range s.nrows {
			s.out[r*m.Rows+i] = dot(cols, w, s.act[r*s.actRow:(r+1)*s.actRow])
		}
	}
}

// grow returns b resized to n, reallocating only when its capacity is short.
func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}
