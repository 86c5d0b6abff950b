package kernels

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// testMatrix quantizes a random rows×cols matrix.
func testMatrix(t testing.TB, r *rand.Rand, typ DType, rows, cols int) Matrix {
	data := make([]byte, 0)
	for range rows {
		data = append(data, mustQuantize(t, typ, randRow(r, cols))...)
	}
	return Matrix{Type: typ, Rows: rows, Cols: cols, Data: data}
}

func TestMatrixRow(t *testing.T) {
	m := Matrix{Type: Q8_0, Rows: 3, Cols: 64, Data: make([]byte, 3*68)}
	m.Data[68] = 7
	if got := m.Row(1); len(got) != 68 || got[0] != 7 || cap(got) != 68 {
		t.Fatalf("Row(1): len %d cap %d first %d", len(got), cap(got), got[0])
	}
}

// TestMatMul checks, for every weight type and nrows 1, 3, 7:
//   - each output equals VecDot of its weight row and the converted
//     activation row, bit for bit, for pools of 1, 2 and 4 threads and none;
//   - each activation row computed alone (nrows = 1) gives bit-identical
//     outputs to the same row inside the batch (batch invariance);
//   - the result is within the VecDot tolerance of a float64 reference.
func TestMatMul(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	pools := map[string]*Pool{"nil": nil, "1": NewPool(1), "2": NewPool(2), "4": NewPool(4)}
	defer func() {
		for _, p := range pools {
			if p != nil {
				p.Close()
			}
		}
	}()
	for _, typ := range weightTypes {
		cols := 256
		if typ.BlockSize() == QK {
			cols = 96
		}
		for _, c := range []int{cols, 4352} {
			const rows = 37
			m := testMatrix(t, r, typ, rows, c)
			for _, nrows := range []int{1, 3, 7} {
				t.Run(typ.String()+"/"+itoa(c)+"/nrows="+itoa(nrows), func(t *testing.T) {
					x := make([]float32, 0, nrows*c)
					for range nrows {
						x = append(x, randRow(r, c)...)
					}
					var s Scratch
					base := make([]float32, nrows*rows)
					MatMul(pools["nil"], &s, m, x, nrows, base)
					// Exactly VecDot, and close to float64.
					vt := typ.VecDotType()
					for ri := range nrows {
						a := mustQuantize(t, vt, x[ri*c:(ri+1)*c])
						for i := range rows {
							got := base[ri*rows+i]
							if want := VecDot(typ, c, m.Row(i), a); math.Float32bits(got) != math.Float32bits(want) {
								t.Fatalf("out[%d,%d] = %v, VecDot = %v", ri, i, got, want)
							}
							ref, mag := refDot(t, typ, m.Row(i), a, c)
							if e := math.Abs(float64(got) - ref); e > dotTol[typ]*mag {
								t.Fatalf("out[%d,%d] = %v, reference %v", ri, i, got, ref)
							}
						}
					}
					for name, p := range pools {
						out := make([]float32, nrows*rows)
						MatMul(p, &s, m, x, nrows, out)
						assertBits(t, "pool "+name, out, base)
					}
					// Batch invariance: row by row with a 4-thread pool.
					for ri := range nrows {
						one := make([]float32, rows)
						MatMul(pools["4"], &s, m, x[ri*c:(ri+1)*c], 1, one)
						assertBits(t, "row "+itoa(ri)+" alone", one, base[ri*rows:(ri+1)*rows])
					}
				})
			}
		}
	}
}

// vecDotOut is MatMul's expected output for m and nrows activation rows x:
// each row quantized to Q8_0 and dotted with every weight row by VecDot.
func vecDotOut(t testing.TB, m Matrix, x []float32, nrows int) []float32 {
	t.Helper()
	c := m.Cols
	want := make([]float32, nrows*m.Rows)
	for ri := range nrows {
		a := mustQuantize(t, Q8_0, x[ri*c:(ri+1)*c])
		for i := range m.Rows {
			want[ri*m.Rows+i] = VecDot(m.Type, c, m.Row(i), a)
		}
	}
	return want
}

func assertBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: [%d] = %v, want %v (bit-identical)", what, i, got[i], want[i])
		}
	}
}

func TestMatMulNoAlloc(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	p := NewPool(4)
	defer p.Close()
	for _, typ := range weightTypes {
		m := testMatrix(t, r, typ, 64, 512)
		x := randRow(r, 3*512)
		out := make([]float32, 3*64)
		var s Scratch
		MatMul(p, &s, m, x, 3, out) // grow the scratch
		if a := testing.AllocsPerRun(20, func() { MatMul(p, &s, m, x, 3, out) }); a != 0 {
			t.Errorf("%s: MatMul allocates %v per call", typ, a)
		}
	}
}

// TestScratchCopy guards against a Scratch copied by value after use (as a
// field of a struct that is copied) writing into the original.
func TestScratchCopy(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	p := NewPool(2)
	defer p.Close()
	m := testMatrix(t, r, Q8_0, 8, 64)
	x := randRow(r, 64)
	var s1 Scratch
	out1 := make([]float32, 8)
	MatMul(p, &s1, m, x, 1, out1)
	s2 := s1
	out2 := make([]float32, 8)
	MatMul(p, &s2, m, x, 1, out2)
	assertBits(t, "copied scratch", out2, out1)
}

var benchMatrices = map[DType]Matrix{}

func benchMatrix(b *testing.B, typ DType) Matrix {
	if m, ok := benchMatrices[typ]; ok {
		return m
	}
	// 1024 output rows of 2816 (a small MoE expert's down/up projection).
	m := testMatrix(b, rand.New(rand.NewPCG(1, 1)), typ, 1024, 2816)
	benchMatrices[typ] = m
	return m
}

func BenchmarkVecDot(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	const n = 4096
	for _, typ := range weightTypes {
		w := mustQuantize(b, typ, randRow(r, n))
		a := mustQuantize(b, typ.VecDotType(), randRow(r, n))
		b.Run(typ.String(), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(w)))
			var sink float32
			for b.Loop() {
				sink += VecDot(typ, n, w, a)
			}
			_ = sink
		})
	}
}

func BenchmarkMatMul(b *testing.B) {
	p := NewPool(runtime.GOMAXPROCS(0))
	defer p.Close()
	r := rand.New(rand.NewPCG(2, 2))
	for _, typ := range weightTypes {
		for _, nrows := range []int{1, 64} {
			b.Run(typ.String()+"/nrows="+itoa(nrows), func(b *testing.B) {
				m := benchMatrix(b, typ)
				x := randRow(r, nrows*m.Cols)
				out := make([]float32, nrows*m.Rows)
				var s Scratch
				MatMul(p, &s, m, x, nrows, out)
				b.ReportAllocs()
				b.SetBytes(int64(len(m.Data)))
				b.ResetTimer()
				for b.Loop() {
					MatMul(p, &s, m, x, nrows, out)
				}
			})
		}
	}
}

// TestMatMulExtremeQuants drives the packed Q8_0 path at the edge of its
// 21-bit lanes: weight quants of ±128/127 (any Q8_0 file may hold -128) and
// Q4_0 nibbles 0/15 against activations quantized to ±127, with the signs
// mixed across the three rows of a lane group.
func TestMatMulExtremeQuants(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	const rows, cols, nrows = 5, 128, 7
	for _, typ := range []DType{Q8_0, Q4_0} {
		bs := typ.TypeSize()
		data := make([]byte, rows*cols/QK*bs)
		for b := 0; b < len(data); b += bs {
			putF16(data[b:], 0.5)
			for j := 2; j < bs; j++ {
				switch {
				case typ == Q4_0 && r.IntN(2) == 0:
					data[b+j] = 0x00
				case typ == Q4_0:
					data[b+j] = 0xff
				case r.IntN(4) == 0:
					data[b+j] = 0x7f // 127
				default:
					data[b+j] = 0x80 // -128
				}
			}
		}
		m := Matrix{Type: typ, Rows: rows, Cols: cols, Data: data}
		x := make([]float32, nrows*cols)
		for i := range x {
			x[i] = 3
			if (i/cols)%2 == 1 || r.IntN(8) == 0 {
				x[i] = -3
			}
		}
		out := make([]float32, nrows*rows)
		var s Scratch
		MatMul(nil, &s, m, x, nrows, out)
		for ri := range nrows {
			a := mustQuantize(t, Q8_0, x[ri*cols:(ri+1)*cols])
			for i := range rows {
				if want := VecDot(typ, cols, m.Row(i), a); math.Float32bits(out[ri*rows+i]) != math.Float32bits(want) {
					t.Fatalf("%s out[%d,%d] = %v, VecDot = %v", typ, ri, i, out[ri*rows+i], want)
				}
			}
		}
	}
}
