package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Block byte sizes, spelled out for the kernels' fixed-size array views.
const (
	q8_0Bytes = 2 + QK            // f16 d, 32 × int8
	q4_0Bytes = 2 + QK/2          // f16 d, 16 bytes of nibbles
	q4KBytes  = 2 + 2 + 12 + 128  // f16 d, f16 dmin, 12 bytes scales/mins, 128 bytes nibbles
	q6KBytes  = 128 + 64 + 16 + 2 // ql, qh, int8 scales, f16 d
	q8KBytes  = 4 + QKK + 2*16    // f32 d, 256 × int8, 16 × int16 bsums
)

// Dequantize converts len(dst) elements of type t from src to float32.
// len(dst) must be a multiple of t's block size and src must hold at least
// t.RowSize(len(dst)) bytes; otherwise it returns an error wrapping ErrLength
// (or ErrUnknownType / ErrUnsupported for a type it cannot decode).
// The values are exactly those ggml's dequantize_row_* produce.
func Dequantize(t DType, src []byte, dst []float32) error {
	if err := checkLen(t, len(dst), len(src)); err != nil {
		return err
	}
	switch t {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = f16Table[binary.LittleEndian.Uint16(src[2*i:])]
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case Q8_0:
		dequantQ8_0(src, dst)
	case Q4_0:
		dequantQ4_0(src, dst)
	case Q4_K:
		dequantQ4K(src, dst)
	case Q6_K:
		dequantQ6K(src, dst)
	case Q8_K:
		dequantQ8K(src, dst)
	default:
		return fmt.Errorf("%w: dequantize %s", ErrUnsupported, t)
	}
	return nil
}

// Quantize converts the len(src) float32 values to type t in dst using
// ggml's reference quantizers (quantize_row_*_ref). len(src) must be a
// multiple of t's block size and dst must hold at least t.RowSize(len(src))
// bytes; otherwise it returns an error wrapping ErrLength (or ErrUnknownType /
// ErrUnsupported).
func Quantize(t DType, src []float32, dst []byte) error {
	if err := checkLen(t, len(src), len(dst)); err != nil {
		return err
	}
	switch t {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	case Q8_0:
		quantQ8_0(src, dst)
	case Q4_0:
		quantQ4_0(src, dst)
	case Q4_K:
		quantQ4K(src, dst)
	case Q6_K:
		quantQ6K(src, dst)
	case Q8_K:
		quantQ8K(src, dst)
	default:
		return fmt.Errorf("%w: quantize to %s", ErrUnsupported, t)
	}
	return nil
}

// checkLen validates n elements of t against a byte buffer of nbytes.
func checkLen(t DType, n, nbytes int) error {
	need, err := t.RowSize(n)
	if err != nil {
		if t.Known() {
			return fmt.Errorf("%w: %v", ErrLength, err)
		}
		return err
	}
	if nbytes < need {
		return fmt.Errorf("%w: %d %s elements need %d bytes, have %d", ErrLength, n, t, need, nbytes)
	}
	return nil
}

// quantizeRow is Quantize without checks, for the vec-dot types, used by
// MatMul on buffers it sized itself.
func quantizeRow(t DType, src []float32, dst []byte) {
	switch t {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	case Q8_0:
		quantQ8_0(src, dst)
	case Q8_K:
		quantQ8K(src, dst)
	default:
		panic("kernels: no row quantizer for " + t.String())
	}
}

func f16At(b []byte) float32 { return f16Table[uint16(b[0])|uint16(b[1])<<8] }

func putF16(b []byte, f float32) {
	h := F32ToF16(f)
	b[0], b[1] = byte(h), byte(h>>8)
}

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

// nearestInt is ggml's nearest_int: round half to even through the 1.5·2²³
// trick. Valid for |f| ≤ 4194303.
func nearestInt(f float32) int32 {
	v := float32(f) + 12582912
	return int32(math.Float32bits(v)&0x007fffff) - 0x00400000
}

// quantQ8_0 is quantize_row_q8_0_ref: d = amax/127, q = roundf(x/d) (half
// away from zero). With SIMD it runs in assembly, bit-identical for finite
// inputs (a block holding Inf or NaN is garbage either way, and the two
// paths may make different garbage).
func quantQ8_0(src []float32, dst []byte) {
	if simdF32() && len(src) >= QK {
		quantQ8_0SIMD(src[:len(src)/QK*QK], dst[:len(src)/QK*q8_0Bytes])
		return
	}
	quantQ8_0Go(src, dst)
}

// quantQ8_0Go is the pure-Go quantQ8_0.
func quantQ8_0Go(src []float32, dst []byte) {
	nb := len(src) / QK
	for i := range nb {
		x := (*[QK]float32)(src[i*QK:])
		y := (*[q8_0Bytes]byte)(dst[i*q8_0Bytes:])
		var amax float32
		for _, v := range x {
			if a := abs32(v); a > amax {
				amax = a
			}
		}
		d := amax / 127
		// 0 when d is 0, or so small (amax below ~3.7e-37) that 1/d
		// overflows: the block's F16 scale is 0 either way.
		id := 1 / d
		if math.IsInf(float64(id), 0) {
			id = 0
		}
		putF16(y[:], d)
		for j, v := range x {
			y[2+j] = byte(int8(math.Round(float64(float32(v * id)))))
		}
	}
}

func dequantQ8_0(src []byte, dst []float32) {
	nb := len(dst) / QK
	for i := range nb {
		x := (*[q8_0Bytes]byte)(src[i*q8_0Bytes:])
		y := (*[QK]float32)(dst[i*QK:])
		d := f16At(x[:])
		for j := range y {
			y[j] = float32(int8(x[2+j])) * d
		}
	}
}

// quantQ4_0 is quantize_row_q4_0_ref: the signed value of largest magnitude
// maps to -8, d = max/-8, q = min(15, trunc(x/d + 8.5)). Byte j holds element
// j in its low nibble and element j+16 in its high nibble.
func quantQ4_0(src []float32, dst []byte) {
	nb := len(src) / QK
	for i := range nb {
		x := (*[QK]float32)(src[i*QK:])
		y := (*[q4_0Bytes]byte)(dst[i*q4_0Bytes:])
		var amax, max float32
		for _, v := range x {
			if a := abs32(v); amax < a {
				amax, max = a, v
			}
		}
		d := max / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(y[:], d)
		for j := range QK / 2 {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+QK/2] * id)
			q0 := min(15, int8(x0+8.5))
			q1 := min(15, int8(x1+8.5))
			y[2+j] = uint8(q0) | uint8(q1)<<4
		}
	}
}

func dequantQ4_0(src []byte, dst []float32) {
	nb := len(dst) / QK
	for i := range nb {
		x := (*[q4_0Bytes]byte)(src[i*q4_0Bytes:])
		y := (*[QK]float32)(dst[i*QK:])
		d := f16At(x[:])
		for j := range QK / 2 {
			q := x[2+j]
			y[j] = float32(int32(q&0xf)-8) * d
			y[j+QK/2] = float32(int32(q>>4)-8) * d
		}
	}
}
