package kernels

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// vecLens are the lengths the vector kernels are checked at: every length
// from 1 to 300 (all tails and lane counts) and one long row.
func vecLens() []int {
	ls := make([]int, 0, 301)
	for n := 1; n <= 300; n++ {
		ls = append(ls, n)
	}
	return append(ls, 4352)
}

// dotBound is the allowed |DotF32 − exact| for n elements: each product and
// each of the (n/16 lane adds + 4 tree adds + 15 tail adds + 1) additions
// rounds once, by at most 2⁻²⁴ of a partial sum bounded by mag = Σ|aᵢbᵢ|.
func dotBound(n int, mag float64) float64 {
	return float64(n/16+21) * 0x1p-24 * mag
}

func randF16Row(r *rand.Rand, n int) []uint16 {
	h := make([]uint16, n)
	for i := range h {
		h[i] = F32ToF16(float32(r.NormFloat64()))
	}
	return h
}

func TestDotF32(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, n := range vecLens() {
		a, b := randRow(r, n), randRow(r, n)
		var want float32
		withSIMD(simdGo, func() { want = DotF32(a, b) })
		var ref, mag float64
		for i := range a {
			p := float64(a[i]) * float64(b[i])
			ref += p
			mag += math.Abs(p)
		}
		if e := math.Abs(float64(want) - ref); e > dotBound(n, mag) {
			t.Fatalf("n=%d: DotF32 = %v, reference %v, err %g > %g", n, want, ref, e, dotBound(n, mag))
		}
		for _, l := range simdLevels() {
			var got float32
			withSIMD(l, func() { got = DotF32(a, b) })
			assertBits(t, "DotF32/"+itoa(n)+"/"+l.String(), []float32{got}, []float32{want})
		}
		// The F16 form agrees with converting first.
		h := randF16Row(r, n)
		hf := make([]float32, n)
		withSIMD(simdGo, func() { F16ToF32Row(hf, h) })
		assertBits(t, "dotF16Row/"+itoa(n), []float32{dotF16Row(a, h)}, []float32{dotLanesAndTail(a, hf)})
	}
}

// dotLanesAndTail is DotF32 in pure Go.
func dotLanesAndTail(a, b []float32) (s float32) {
	withSIMD(simdGo, func() { s = DotF32(a, b) })
	return s
}

func TestAxpyAndF16Row(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	for _, n := range vecLens() {
		x, d0 := randRow(r, n), randRow(r, n)
		a := float32(r.NormFloat64())
		want := make([]float32, n)
		for i := range want {
			want[i] = d0[i] + float32(a*x[i])
		}
		h := randF16Row(r, n)
		h[0] = 0x7c00 // +Inf
		if n > 1 {
			h[1] = 0x0001 // smallest subnormal
		}
		wantH := make([]float32, n)
		for i, v := range h {
			wantH[i] = F16ToF32(v)
		}
		for _, l := range simdLevels() {
			got := append([]float32(nil), d0...)
			gotH := make([]float32, n)
			withSIMD(l, func() {
				AxpyF32(got, a, x)
				F16ToF32Row(gotH, h)
			})
			assertBits(t, "AxpyF32/"+itoa(n)+"/"+l.String(), got, want)
			assertBits(t, "F16ToF32Row/"+itoa(n)+"/"+l.String(), gotH, wantH)
		}
	}
}

// TestAttnKernels checks the grouped kernels on every level against a loop
// of DotF32 (scores) and of in-order products (accumulation), bit for bit,
// at head sizes with and without SIMD shapes and strides wider than a head.
func TestAttnKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	for _, heads := range []int{1, 2, 3} {
		for _, hd := range []int{5, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144} {
			for _, n := range []int{0, 1, 7, 33, 300} {
				stride := hd + 8*r.IntN(3)
				q := randRow(r, heads*hd)
				p := randRow(r, heads*n)
				k32 := randRow(r, max(n*stride, 1))
				k16 := randF16Row(r, max(n*stride, 1))
				out0 := randRow(r, heads*hd)
				wantS32 := make([]float32, heads*n)
				wantS16 := make([]float32, heads*n)
				wantO32 := append([]float32(nil), out0...)
				wantO16 := append([]float32(nil), out0...)
				row := make([]float32, hd)
				for tt := range n {
					F16ToF32Row(row, k16[tt*stride:tt*stride+hd])
					for h := range heads {
						wantS32[h*n+tt] = dotLanesAndTail(q[h*hd:(h+1)*hd], k32[tt*stride:])
						wantS16[h*n+tt] = dotLanesAndTail(q[h*hd:(h+1)*hd], row)
						for d := range hd {
							wantO32[h*hd+d] += float32(p[h*n+tt] * k32[tt*stride+d])
							wantO16[h*hd+d] += float32(p[h*n+tt] * row[d])
						}
					}
				}
				name := itoa(heads) + "x" + itoa(hd) + "/n=" + itoa(n)
				for _, l := range simdLevels() {
					s32, s16 := make([]float32, heads*n), make([]float32, heads*n)
					o32 := append([]float32(nil), out0...)
					o16 := append([]float32(nil), out0...)
					withSIMD(l, func() {
						AttnScoresF32(s32, q, heads, hd, k32, stride, n)
						AttnScoresF16(s16, q, heads, hd, k16, stride, n)
						AttnAccumF32(o32, p, heads, hd, k32, stride, n)
						AttnAccumF16(o16, p, heads, hd, k16, stride, n)
					})
					assertBits(t, "AttnScoresF32/"+name+"/"+l.String(), s32, wantS32)
					assertBits(t, "AttnScoresF16/"+name+"/"+l.String(), s16, wantS16)
					assertBits(t, "AttnAccumF32/"+name+"/"+l.String(), o32, wantO32)
					assertBits(t, "AttnAccumF16/"+name+"/"+l.String(), o16, wantO16)
				}
			}
		}
	}
}

// quantRowsChecked are TestQuantQ8_0SIMD's rows, which TestQuantPackRow
// runs through the fused quantizer and packer too.
var quantRowsChecked [][]float32

// TestQuantPackRow checks the fused quantize-and-pack kernel byte for byte
// against quantQ8_0Go then packRowVNNIGo, on TestQuantQ8_0SIMD's rows
// (random, zero, tiny and rounding-midpoint blocks), at the single-row and
// an interleaved step, and that it leaves a packed block's last 12 bytes
// alone.
func TestQuantPackRow(t *testing.T) {
	if quantRowsChecked == nil {
		t.Run("rows", TestQuantQ8_0SIMD)
	}
	tiny := make([]float32, 2*QK)
	for i := range QK {
		tiny[i] = 1e-37 * float32(i%7-3) / 3
	}
	tiny[QK+5] = math.SmallestNonzeroFloat32
	for i, x := range append(quantRowsChecked, tiny) {
		nb := len(x) / QK
		for _, step := range []int{raBlock, 3 * raBlock} {
			want := make([]byte, nb*step)
			for j := range want {
				want[j] = byte(j * 7)
			}
			got := bytes.Clone(want)
			quantPackRowGo(x, want, step)
			for _, l := range simdLevels() {
				copy(got, want)
				for b := range nb {
					clear(got[b*step : b*step+52])
				}
				withSIMD(l, func() { quantPackRow(x, got, step) })
				if !bytes.Equal(got, want) {
					for j := range got {
						if got[j] != want[j] {
							t.Fatalf("row %d step %d level %s: byte %d (block %d, +%d) = %#x, want %#x", i, step, l, j, j/step, j%step, got[j], want[j])
						}
					}
				}
			}
		}
	}
}

// TestQuantPackRowNaN: with a NaN (or an infinity) among the activations,
// the fused kernel writes what the two-pass path it replaces writes
// (quantQ8_0 then packRowVNNI), so MatMul stays bit-identical to VecDot,
// which quantizes that way. The Go twins differ from both for NaN. The
// fused kernel first narrowed a NaN's quant without saturation (0, not
// −128), summed Σq before narrowing, and took the block's amax in another
// order, which with a NaN last zeroed the whole block (found by review).
func TestQuantPackRowNaN(t *testing.T) {
	if cpuSIMD < simdAVX512VNNI {
		t.Skip("no AVX-512 VNNI")
	}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, bad := range []float32{nan, -nan, inf, -inf} {
		for _, pos := range []int{0, 5, 7, 8, 15, 16, 17, 24, 31, 32, 63} {
			x := make([]float32, 2*QK)
			for i := range x {
				x[i] = float32(i) - 10
			}
			x[pos] = bad
			act := make([]byte, 2*q8_0Bytes)
			quantQ8_0(x, act)
			want := make([]byte, 2*raBlock)
			packRowVNNI(act, want, raBlock)
			got := make([]byte, 2*raBlock)
			quantPackRow(x, got, raBlock)
			for b := range 2 {
				if !bytes.Equal(got[b*raBlock:b*raBlock+52], want[b*raBlock:b*raBlock+52]) {
					t.Errorf("%v at %d, block %d:\n got %x\nwant %x", bad, pos, b, got[b*raBlock:b*raBlock+52], want[b*raBlock:b*raBlock+52])
				}
			}
		}
	}
	// And through MatMul, against VecDot.
	r := rand.New(rand.NewPCG(39, 40))
	m := testMatrix(t, r, Q8_0, 16, 64)
	x := randRow(r, 64)
	x[5] = nan
	want := vecDotOut(t, m, x, 1)
	got := make([]float32, 16)
	var s Scratch
	MatMul(nil, &s, m, x, 1, got)
	assertBits(t, "MatMul with a NaN activation vs VecDot", got, want)
}

// TestQuantQ8_0SIMD checks the SIMD Q8_0 quantizer byte for byte against the
// Go one on random rows, zero and constant blocks, and values that land
// exactly on or one ulp either side of a rounding midpoint.
func TestQuantQ8_0SIMD(t *testing.T) {
	r := rand.New(rand.NewPCG(37, 38))
	var rows [][]float32
	for _, n := range []int{32, 64, 96, 1024, 4352} {
		for range 20 {
			rows = append(rows, randRow(r, n))
		}
	}
	rows = append(rows, make([]float32, 64)) // d = 0
	// amax 127 gives id = 1, so x·id = x: exact halves and their neighbours.
	for _, scale := range []float32{1, 0.37, 3.1e-3, 1e4} {
		x := make([]float32, 0, 32*40)
		for len(x) < cap(x) {
			x = append(x, 127*scale)
			for range 31 {
				m := float32(r.IntN(254)-127) + 0.5
				switch r.IntN(4) {
				case 1:
					m = math.Nextafter32(m, 0)
				case 2:
					m = math.Nextafter32(m, float32(math.Inf(1)))
				case 3:
					m = float32(r.IntN(3)-1) * math.Nextafter32(0.5, 0)
				}
				x = append(x, m*scale)
			}
		}
		rows = append(rows, x)
	}
	quantRowsChecked = rows
	for i, x := range rows {
		want := make([]byte, len(x)/QK*q8_0Bytes)
		quantQ8_0Go(x, want)
		for _, l := range simdLevels() {
			got := make([]byte, len(want))
			withSIMD(l, func() { quantQ8_0(x, got) })
			if !bytes.Equal(got, want) {
				for j := range got {
					if got[j] != want[j] {
						t.Fatalf("row %d (%d values) level %s: byte %d = %#x, want %#x", i, len(x), l, j, got[j], want[j])
					}
				}
			}
		}
	}
}

func BenchmarkDotF32(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{64, 4352} {
		x, y := randRow(r, n), randRow(r, n)
		for _, l := range simdLevels()[:2] {
			b.Run(itoa(n)+"/"+l.String(), func(b *testing.B) {
				b.SetBytes(int64(8 * n))
				withSIMD(l, func() {
					for b.Loop() {
						DotF32(x, y)
					}
				})
			})
		}
	}
}

// BenchmarkAttnF16 is one GQA task of the bench model: 2 query heads of 64
// against 256 F16 positions (kv stride 512), scores then accumulation.
func BenchmarkAttnF16(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	const heads, hd, stride, n = 2, 64, 512, 256
	q, p := randRow(r, heads*hd), randRow(r, heads*n)
	k, v := randF16Row(r, n*stride), randF16Row(r, n*stride)
	s, out := make([]float32, heads*n), make([]float32, heads*hd)
	for _, l := range simdLevels() {
		b.Run(l.String(), func(b *testing.B) {
			b.SetBytes(2 * 2 * n * hd) // K and V rows read
			withSIMD(l, func() {
				for b.Loop() {
					AttnScoresF16(s, q, heads, hd, k, stride, n)
					AttnAccumF16(out, p, heads, hd, v, stride, n)
				}
			})
		})
	}
}

func BenchmarkQuantQ8_0(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	const n = 4352
	x := randRow(r, n)
	dst := make([]byte, n/QK*q8_0Bytes)
	for _, l := range simdLevels()[:2] {
		b.Run(l.String(), func(b *testing.B) {
			b.SetBytes(4 * n)
			withSIMD(l, func() {
				for b.Loop() {
					quantQ8_0(x, dst)
				}
			})
		})
	}
}

// TestRoundF16Row checks the SIMD F16 round trip (RoundF16Row) and
// conversion (F32ToF16Row) against F32ToF16 on a sweep of float32 bit
// patterns (every 1021st, covering every exponent, subnormals, Inf and NaNs
// of both signs) and on halfway cases around every F16 value.
func TestRoundF16Row(t *testing.T) {
	var x []float32
	for b := uint64(0); b < 1<<32; b += 1021 {
		x = append(x, math.Float32frombits(uint32(b)))
	}
	for h := range 1 << 16 {
		if h&0x7c00 == 0x7c00 {
			continue
		}
		f := F16ToF32(uint16(h))
		next := F16ToF32(uint16(h + 1))
		if uint16(h+1)&0x7c00 == 0x7c00 && uint16(h+1)&0x3ff != 0 {
			continue
		}
		mid := float32((float64(f) + float64(next)) / 2)
		x = append(x, mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, float32(math.Inf(1))))
	}
	want := make([]float32, len(x))
	for i, v := range x {
		want[i] = F16ToF32(F32ToF16(v))
	}
	wantH := make([]uint16, len(x))
	for i, v := range x {
		wantH[i] = F32ToF16(v)
	}
	for _, l := range simdLevels() {
		for _, n := range []int{len(x), 13} {
			h := make([]uint16, n)
			withSIMD(l, func() { F32ToF16Row(h, x[:n]) })
			for i := range h {
				if h[i] != wantH[i] {
					t.Fatalf("%s: F32ToF16Row(%#x) = %#x, want %#x", l, math.Float32bits(x[i]), h[i], wantH[i])
				}
			}
			got := append([]float32(nil), x[:n]...)
			withSIMD(l, func() { RoundF16Row(got) })
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s: RoundF16Row(%#x) = %#x, want %#x", l, math.Float32bits(x[i]), math.Float32bits(got[i]), math.Float32bits(want[i]))
				}
			}
		}
		// Rows of 13 and 3 values, so that every value also goes through
		// a short row's last few (the tail of the vector loop).
		for _, n := range []int{13, 3} {
			got := append([]float32(nil), x...)
			withSIMD(l, func() {
				for off := 0; off+n <= len(got); off += n {
					RoundF16Row(got[off : off+n])
				}
			})
			for i := range got[:len(got)/n*n] {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s: RoundF16Row in rows of %d: %#x -> %#x, want %#x", l, n, math.Float32bits(x[i]), math.Float32bits(got[i]), math.Float32bits(want[i]))
				}
			}
		}
	}
}

// TestPrefetchRows calls the prefetch hint at the edges of its slice: it
// must not panic or touch memory past x, whatever n asks for.
func TestPrefetchRows(t *testing.T) {
	x := make([]uint16, 10*64)
	for _, c := range [][3]int{{64, 10, 64}, {64, 50, 64}, {64, 0, 64}, {0, 3, 8}, {64, 10, 0}, {700, 2, 64}} {
		PrefetchRows(x, c[0], c[1], c[2])
		PrefetchRows(make([]float32, 3), c[0], c[1], c[2])
	}
	PrefetchRows([]float32(nil), 1, 1, 1)
}
