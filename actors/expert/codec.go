package expert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"
)

// ErrBadPayload is wrapped by errors about activations whose bytes do not
// match their declared shape.
var ErrBadPayload = errors.New("expert: bad activation payload")

// maxPayloadFloats bounds rows × dim of one message (256 MiB of float32) so
// a corrupt shape cannot make a receiver allocate without limit.
const maxPayloadFloats = 64 << 20

// AppendFloats appends x as little-endian float32 bytes to b and returns the
// extended slice. It allocates only when b lacks capacity.
func AppendFloats(b []byte, x []float32) []byte {
	n := len(b)
	b = growBytes(b, n+4*len(x))
	out := b[n:]
	if littleEndian {
		copy(out, floatBytes(x))
		return b
	}
	for i, v := range x {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return b
}

// littleEndian reports whether float32s in memory are already the wire's
// little-endian bytes, so encoding and decoding are a copy.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// floatBytes is x's memory as bytes.
func floatBytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

// DecodeFloats fills dst (rows × dim floats) from little-endian float32
// bytes. It returns an error wrapping ErrBadPayload when the shape is out of
// range or does not match len(b) or len(dst).
func DecodeFloats(dst []float32, b []byte, rows, dim int) error {
	if err := CheckShape(len(b), rows, dim); err != nil {
		return err
	}
	if len(dst) != rows*dim {
		return fmt.Errorf("%w: %d×%d floats into a buffer of %d", ErrBadPayload, rows, dim, len(dst))
	}
	if littleEndian {
		copy(floatBytes(dst), b)
		return nil
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return nil
}

// CheckShape reports whether n bytes hold exactly rows × dim float32s.
func CheckShape(n, rows, dim int) error {
	if rows < 0 || dim < 0 || (dim > 0 && rows > maxPayloadFloats/dim) {
		return fmt.Errorf("%w: shape %d×%d out of range", ErrBadPayload, rows, dim)
	}
	if n != 4*rows*dim {
		return fmt.Errorf("%w: %d bytes for %d×%d float32", ErrBadPayload, n, rows, dim)
	}
	return nil
}

func growBytes(b []byte, n int) []byte {
	if cap(b) < n {
		nb := make([]byte, n, max(n, 2*cap(b)))
		copy(nb, b)
		return nb
	}
	return b[:n]
}

func growFloats(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}
