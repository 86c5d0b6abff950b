package kernels

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// weightTypes are the types with quantizers and dot kernels.
var weightTypes = []DType{F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K}

// testSizes returns odd and large row lengths valid for t's block size.
func testSizes(t DType) []int {
	if t.BlockSize() == QKK {
		return []int{256, 768, 4352}
	}
	return []int{32, 96, 256, 4352}
}

// randRow fills a row with Gaussian values scaled per row plus a few
// outliers, so blocks see both typical and extreme ranges.
func randRow(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	scale := 0.1 + 2*r.Float64()
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	for range n / 64 {
		x[r.IntN(n)] = float32(r.NormFloat64() * scale * 6)
	}
	return x
}

func mustQuantize(t testing.TB, typ DType, x []float32) []byte {
	t.Helper()
	rs, err := typ.RowSize(len(x))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, rs)
	if err := Quantize(typ, x, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustDequantize(t testing.TB, typ DType, b []byte, n int) []float32 {
	t.Helper()
	y := make([]float32, n)
	if err := Dequantize(typ, b, y); err != nil {
		t.Fatal(err)
	}
	return y
}

// TestRoundTrip checks Dequantize(Quantize(x)) against x with a per-type
// bound:
//
//   - F32: exact.
//   - F16: |err| ≤ 2⁻¹¹·|x| (half an ulp; inputs stay in the normal range).
//   - BF16: |err| ≤ 2⁻⁸·|x|.
//   - Q8_0: per block of 32, |err| ≤ d/2 + 127·|d16−d| where d = amax/127 and
//     d16 its stored f16 value (the quants are computed with the unrounded d).
//   - Q8_K: per block of 256, |err| ≤ |d|/2 (d is stored as f32).
//   - Q4_0: per block, |err| ≤ |d| + 8·|d16−d| with d = max/−8: the value of
//     largest magnitude can land on the clamp at 15, a full step away.
//   - Q4_K, Q6_K: the fitted sub-block scales don't give a simple per-element
//     bound, so the RMS error is bounded relative to the RMS of x: Q4_K ≤ 0.13,
//     Q6_K ≤ 0.035 (≈ a 4- and 6-bit quantizer on Gaussian data, with margin),
//     and every element is within 2.5 of its sub-block step of x.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range append(weightTypes, Q8_K) {
		for _, n := range testSizes(typ) {
			t.Run(typ.String()+"/"+itoa(n), func(t *testing.T) {
				for range 3 {
					x := randRow(r, n)
					q := mustQuantize(t, typ, x)
					y := mustDequantize(t, typ, q, n)
					checkRoundTrip(t, typ, x, q, y)
				}
			})
		}
	}
}

func checkRoundTrip(t *testing.T, typ DType, x []float32, q []byte, y []float32) {
	t.Helper()
	switch typ {
	case F32:
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("[%d] %v != %v", i, y[i], x[i])
			}
		}
	case F16, BF16:
		rel := math.Ldexp(1, -11)
		if typ == BF16 {
			rel = math.Ldexp(1, -8)
		}
		for i := range x {
			if e := math.Abs(float64(y[i]) - float64(x[i])); e > rel*math.Abs(float64(x[i])) {
				t.Fatalf("[%d] %v -> %v, err %g", i, x[i], y[i], e)
			}
		}
	case Q8_0, Q4_0:
		bs := typ.TypeSize()
		for b := 0; b < len(x)/QK; b++ {
			blk := x[b*QK : (b+1)*QK]
			var amax, mx float64
			for _, v := range blk {
				if a := math.Abs(float64(v)); a > amax {
					amax, mx = a, float64(v)
				}
			}
			d16 := float64(f16At(q[b*bs:]))
			var bound float64
			if typ == Q8_0 {
				d := float64(float32(amax) / 127)
				bound = d/2 + 127*math.Abs(d16-d)
			} else {
				d := float64(float32(mx) / -8)
				bound = math.Abs(d) + 8*math.Abs(d16-d)
			}
			bound = bound*(1+1e-6) + 1e-30
			for j, v := range blk {
				if e := math.Abs(float64(y[b*QK+j]) - float64(v)); e > bound {
					t.Fatalf("block %d [%d] %v -> %v, err %g > %g", b, j, v, y[b*QK+j], e, bound)
				}
			}
		}
	case Q8_K:
		for b := 0; b < len(x)/QKK; b++ {
			d := math.Float32frombits(binary.LittleEndian.Uint32(q[b*q8KBytes:]))
			bound := math.Abs(float64(d))/2*(1+1e-5) + 1e-30
			for j := range QKK {
				i := b*QKK + j
				if e := math.Abs(float64(y[i]) - float64(x[i])); e > bound {
					t.Fatalf("[%d] %v -> %v, err %g > %g", i, x[i], y[i], e, bound)
				}
			}
		}
	case Q4_K, Q6_K:
		limit, sub := 0.13, 32
		if typ == Q6_K {
			limit, sub = 0.035, 16
		}
		var se, sx float64
		for i := range x {
			e := float64(y[i]) - float64(x[i])
			se += e * e
			sx += float64(x[i]) * float64(x[i])
		}
		if rel := math.Sqrt(se / sx); rel > limit {
			t.Fatalf("relative RMS error %.4f > %.4f", rel, limit)
		}
		levels := 15.0
		if typ == Q6_K {
			levels = 63
		}
		for s := 0; s < len(x)/sub; s++ {
			lo, hi := math.Inf(1), math.Inf(-1)
			for _, v := range x[s*sub : (s+1)*sub] {
				lo, hi = min(lo, float64(v)), max(hi, float64(v))
			}
			step := (max(hi, 0) - min(lo, 0)) / levels
			for i := s * sub; i < (s+1)*sub; i++ {
				if e := math.Abs(float64(y[i]) - float64(x[i])); e > 2.5*step+1e-6 {
					t.Fatalf("sub-block %d [%d] %v -> %v, err %g > 2.5 steps of %g", s, i, x[i], y[i], e, step)
				}
			}
		}
	}
}

func TestQuantizeZeros(t *testing.T) {
	for _, typ := range append(weightTypes, Q8_K) {
		t.Run(typ.String(), func(t *testing.T) {
			x := make([]float32, 512)
			q := mustQuantize(t, typ, x)
			for _, v := range mustDequantize(t, typ, q, len(x)) {
				if v != 0 {
					t.Fatalf("zero row dequantized to %v", v)
				}
			}
		})
	}
}

func TestQuantizeErrors(t *testing.T) {
	buf := make([]byte, 1024)
	cases := []struct {
		name string
		err  error
		fn   func() error
	}{
		{"odd count", ErrLength, func() error { return Quantize(Q8_0, make([]float32, 33), buf) }},
		{"short dst", ErrLength, func() error { return Quantize(Q4_K, make([]float32, 256), buf[:100]) }},
		{"short src", ErrLength, func() error { return Dequantize(Q8_0, buf[:33], make([]float32, 32)) }},
		{"unknown", ErrUnknownType, func() error { return Quantize(DType(99), make([]float32, 32), buf) }},
		{"unsupported", ErrUnsupported, func() error { return Quantize(Q4_1, make([]float32, 32), buf) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.fn(); !errors.Is(err, c.err) {
				t.Fatalf("got %v, want %v", err, c.err)
			}
		})
	}
}

// TestGoldenQ8_0 pins the Q8_0 layout and quantize_row_q8_0_ref's roundf
// (half away from zero): amax 127 gives d = 1 exactly.
func TestGoldenQ8_0(t *testing.T) {
	x := make([]float32, 32)
	for j := range x {
		x[j] = float32(j) - 15.5 // -15.5 … 15.5
	}
	x[31] = -127
	x[30] = 2.5
	q := mustQuantize(t, Q8_0, x)
	if q[0] != 0x00 || q[1] != 0x3c {
		t.Fatalf("d = %#02x%02x, want f16 1.0 = 0x3c00", q[1], q[0])
	}
	want := make([]int8, 32)
	for j := range want {
		want[j] = int8(j - 15) // roundf(j-15.5) rounds away: -15.5→-16 … 0.5→1
		if j < 16 {
			want[j] = int8(j - 16)
		}
	}
	want[31], want[30] = -127, 3 // 2.5 → 3, not 2
	for j, w := range want {
		if int8(q[2+j]) != w {
			t.Errorf("qs[%d] = %d, want %d (x = %v)", j, int8(q[2+j]), w, x[j])
		}
	}
}

// TestGoldenQ4_0 pins the nibble order (byte j: element j low, j+16 high),
// d = max/-8 with max the signed value of largest magnitude, and the +8.5
// truncation with clamp at 15.
func TestGoldenQ4_0(t *testing.T) {
	x := make([]float32, 32)
	for j := range 16 {
		x[j] = float32(j - 8) // -8 … 7 → q = trunc(x + 8.5) = 0 … 15
	}
	x[16], x[17], x[18], x[19] = 7.5, -6.5, -6.49, 0 // q: 16→clamped 15, 2, 2, 8
	q := mustQuantize(t, Q4_0, x)
	// max = -8 (first value of largest magnitude), so d = max/-8 = 1 and id = 1.
	if got := f16At(q); got != 1 {
		t.Fatalf("d = %v, want 1", got)
	}
	// x·id with id = 1: q = min(15, trunc(x + 8.5)).
	lo := func(j int) uint8 { return q[2+j] & 0xf }
	hi := func(j int) uint8 { return q[2+j] >> 4 }
	if lo(0) != 0 || lo(15) != 15 || lo(8) != 8 {
		t.Errorf("low nibbles 0,8,15 = %d,%d,%d, want 0,8,15", lo(0), lo(8), lo(15))
	}
	if hi(0) != 15 || hi(1) != 2 || hi(2) != 2 || hi(3) != 8 {
		t.Errorf("high nibbles 0..3 = %d,%d,%d,%d, want 15,2,2,8", hi(0), hi(1), hi(2), hi(3))
	}
	y := mustDequantize(t, Q4_0, q, 32)
	if y[0] != -8 || y[15] != 7 || y[16] != 7 || y[17] != -6 || y[19] != 0 {
		t.Errorf("dequantized %v", y)
	}
}

// TestGoldenQ8_K pins Q8_K: iscale = -127/max, nearest_int (half to even),
// d = 1/iscale, bsums per 16.
func TestGoldenQ8_K(t *testing.T) {
	x := make([]float32, 256)
	x[0] = 127 // max: iscale = -1, d = -1
	x[1], x[2], x[3] = 2.5, 3.5, -0.5
	x[17] = 5
	q := mustQuantize(t, Q8_K, x)
	if d := math.Float32frombits(binary.LittleEndian.Uint32(q)); d != -1 {
		t.Fatalf("d = %v, want -1", d)
	}
	qs := q[4:]
	if int8(qs[0]) != -127 || int8(qs[1]) != -2 || int8(qs[2]) != -4 || int8(qs[3]) != 0 || int8(qs[17]) != -5 {
		t.Errorf("qs = %d %d %d %d %d, want -127 -2 -4 0 -5", int8(qs[0]), int8(qs[1]), int8(qs[2]), int8(qs[3]), int8(qs[17]))
	}
	bs := func(j int) int16 { return int16(binary.LittleEndian.Uint16(q[4+256+2*j:])) }
	if bs(0) != -133 || bs(1) != -5 || bs(2) != 0 {
		t.Errorf("bsums = %d %d %d, want -133 -5 0", bs(0), bs(1), bs(2))
	}
}

// TestGoldenQ4_K builds a block by hand from the layout (6-bit scales and mins
// packed in 12 bytes; byte 32c+l of qs holds elements 64c+l low, 64c+32+l
// high) and checks Dequantize and the scale unpacking.
func TestGoldenQ4_K(t *testing.T) {
	var sc, mn [8]uint8
	for j := range 8 {
		sc[j] = uint8(j + 1 + 50*(j&1)) // uses the high 2 bits for odd j
		mn[j] = uint8(60 - 7*j)
	}
	b := make([]byte, q4KBytes)
	binary.LittleEndian.PutUint16(b[0:], F32ToF16(0.5))
	binary.LittleEndian.PutUint16(b[2:], F32ToF16(0.25))
	s := b[4:16]
	for j := range 4 {
		s[j] = sc[j]&63 | (sc[j+4]>>4)<<6
		s[j+4] = mn[j]&63 | (mn[j+4]>>4)<<6
		s[j+8] = sc[j+4]&0xf | (mn[j+4]&0xf)<<4
	}
	L := make([]uint8, 256)
	for i := range L {
		L[i] = uint8((i*7 + i/32) % 16)
	}
	for c := range 4 {
		for l := range 32 {
			b[16+32*c+l] = L[64*c+l] | L[64*c+32+l]<<4
		}
	}
	for j := range 8 {
		gs, gm := scaleMinK4(j, (*[12]byte)(s))
		if gs != sc[j] || gm != mn[j] {
			t.Fatalf("sub-block %d: scale,min = %d,%d, want %d,%d", j, gs, gm, sc[j], mn[j])
		}
	}
	y := mustDequantize(t, Q4_K, b, 256)
	for i, v := range y {
		j := i / 32
		want := 0.5*float64(sc[j])*float64(L[i]) - 0.25*float64(mn[j])
		if float64(v) != want {
			t.Fatalf("[%d] = %v, want %v", i, v, want)
		}
	}
}

// TestGoldenQ6_K builds a block by hand: element 128h+l+32k (k = 0..3) has its
// low nibble in ql[64h + l + 32(k&1)] (low half for k < 2, high half
// otherwise) and its high 2 bits in qh[32h+l] at bit 2k; scale per 16.
func TestGoldenQ6_K(t *testing.T) {
	b := make([]byte, q6KBytes)
	L := make([]uint8, 256)
	for i := range L {
		L[i] = uint8((i*11 + 5) % 64)
	}
	for h := range 2 {
		for l := range 32 {
			for k := range 4 {
				v := L[128*h+32*k+l]
				idx := 64*h + l + 32*(k&1)
				b[idx] |= (v & 0xf) << (4 * (k >> 1))
				b[128+32*h+l] |= (v >> 4) << (2 * k)
			}
		}
	}
	for j := range 16 {
		b[192+j] = byte(int8(j*9 - 70))
	}
	binary.LittleEndian.PutUint16(b[208:], F32ToF16(0.125))
	y := mustDequantize(t, Q6_K, b, 256)
	for i, v := range y {
		want := 0.125 * float64(int8(b[192+i/16])) * (float64(L[i]) - 32)
		if float64(v) != want {
			t.Fatalf("[%d] = %v, want %v", i, v, want)
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
