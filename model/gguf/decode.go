package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/conclave-ai/conclave/kernels"
)

// decoder reads the GGUF metadata sections from b. Every read checks the
// bytes that remain first, so a corrupt file produces an error, never a
// panic or an allocation larger than the file.
type decoder struct {
	path string
	b    []byte
	off  int // next unread byte

	// Where the decoder is, for error messages; formatted only on error.
	section string // "header", "key", "tensor"
	index   int    // entry number within section, -1 for none
	name    string // key or tensor name once read
}

func (d *decoder) remaining() uint64 { return uint64(len(d.b) - d.off) }

func (d *decoder) where() string {
	switch {
	case d.name != "":
		return fmt.Sprintf("%s %d (%q)", d.section, d.index, d.name)
	case d.index >= 0:
		return fmt.Sprintf("%s %d", d.section, d.index)
	}
	return d.section
}

// fail returns an error wrapping ErrCorrupt that names the file and the
// current key or tensor.
func (d *decoder) fail(format string, args ...any) error {
	return fmt.Errorf("gguf: %s: %w: %s: %s", d.path, ErrCorrupt, d.where(), fmt.Sprintf(format, args...))
}

// take returns the next n bytes, or an error naming what was being read.
func (d *decoder) take(n uint64, what string) ([]byte, error) {
	if n > d.remaining() {
		return nil, d.fail("truncated reading %s: need %d bytes at offset %d, %d left", what, n, d.off, d.remaining())
	}
	p := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return p, nil
}

func (d *decoder) u8(what string) (uint8, error) {
	p, err := d.take(1, what)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

func (d *decoder) u16(what string) (uint16, error) {
	p, err := d.take(2, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(p), nil
}

func (d *decoder) u32(what string) (uint32, error) {
	p, err := d.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(p), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	p, err := d.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p), nil
}

func (d *decoder) boolean(what string) (bool, error) {
	c, err := d.u8(what)
	if err != nil {
		return false, err
	}
	if c > 1 {
		return false, d.fail("%s at offset %d is %d, want 0 or 1", what, d.off-1, c)
	}
	return c == 1, nil
}

// str reads a length-prefixed string and copies it out of the mapping.
func (d *decoder) str(what string) (string, error) {
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > d.remaining() {
		return "", d.fail("%s length %d at offset %d exceeds the %d bytes left", what, n, d.off-8, d.remaining())
	}
	p, _ := d.take(n, what)
	return string(p), nil
}

// value reads one value of type t; depth counts enclosing arrays.
func (d *decoder) value(t ValueType, depth int) (any, error) {
	switch t {
	case Uint8:
		return d.u8("uint8 value")
	case Int8:
		v, err := d.u8("int8 value")
		return int8(v), err
	case Uint16:
		return d.u16("uint16 value")
	case Int16:
		v, err := d.u16("int16 value")
		return int16(v), err
	case Uint32:
		return d.u32("uint32 value")
	case Int32:
		v, err := d.u32("int32 value")
		return int32(v), err
	case Float32:
		v, err := d.u32("float32 value")
		return math.Float32frombits(v), err
	case Bool:
		return d.boolean("bool value")
	case String:
		return d.str("string value")
	case Uint64:
		return d.u64("uint64 value")
	case Int64:
		v, err := d.u64("int64 value")
		return int64(v), err
	case Float64:
		v, err := d.u64("float64 value")
		return math.Float64frombits(v), err
	case Array:
		return d.array(depth)
	}
	return nil, d.fail("unknown value type %d at offset %d", uint32(t), d.off-4)
}

// fixed decodes n fixed-size elements of size bytes each; the caller has
// checked that n*size bytes remain.
func fixed[T any](d *decoder, n, size uint64, get func([]byte) T) []T {
	p, _ := d.take(n*size, "array elements")
	s := make([]T, n)
	for i := range s {
		s[i] = get(p[uint64(i)*size:])
	}
	return s
}

func (d *decoder) array(depth int) (any, error) {
	if depth >= maxArrayDepth {
		return nil, d.fail("arrays nested deeper than %d at offset %d", maxArrayDepth, d.off)
	}
	et32, err := d.u32("array element type")
	if err != nil {
		return nil, err
	}
	et := ValueType(et32)
	if !et.Valid() {
		return nil, d.fail("unknown array element type %d at offset %d", et32, d.off-4)
	}
	n, err := d.u64("array length")
	if err != nil {
		return nil, err
	}
	// Refuse counts the file cannot hold before allocating anything.
	if min := et.encodedMin(); n > d.remaining()/min {
		return nil, d.fail("array of %d %s elements needs at least %d bytes each, only %d bytes left at offset %d",
			n, et, min, d.remaining(), d.off)
	}
	le := binary.LittleEndian
	switch et {
	case Uint8:
		return fixed(d, n, 1, func(p []byte) uint8 { return p[0] }), nil
	case Int8:
		return fixed(d, n, 1, func(p []byte) int8 { return int8(p[0]) }), nil
	case Uint16:
		return fixed(d, n, 2, le.Uint16), nil
	case Int16:
		return fixed(d, n, 2, func(p []byte) int16 { return int16(le.Uint16(p)) }), nil
	case Uint32:
		return fixed(d, n, 4, le.Uint32), nil
	case Int32:
		return fixed(d, n, 4, func(p []byte) int32 { return int32(le.Uint32(p)) }), nil
	case Float32:
		return fixed(d, n, 4, func(p []byte) float32 { return math.Float32frombits(le.Uint32(p)) }), nil
	case Uint64:
		return fixed(d, n, 8, le.Uint64), nil
	case Int64:
		return fixed(d, n, 8, func(p []byte) int64 { return int64(le.Uint64(p)) }), nil
	case Float64:
		return fixed(d, n, 8, func(p []byte) float64 { return math.Float64frombits(le.Uint64(p)) }), nil
	case Bool:
		s := make([]bool, n)
		for i := range s {
			if s[i], err = d.boolean("bool array element"); err != nil {
				return nil, err
			}
		}
		return s, nil
	case String:
		s := make([]string, n)
		for i := range s {
			if s[i], err = d.str("string array element"); err != nil {
				return nil, err
			}
		}
		return s, nil
	default: // Array
		s := make([]any, n)
		for i := range s {
			if s[i], err = d.array(depth + 1); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
}

// tensorInfo reads one tensor directory entry and checks what can be
// checked without the alignment: dims, type, element count and size.
func (d *decoder) tensorInfo() (TensorInfo, error) {
	var ti TensorInfo
	name, err := d.str("tensor name")
	if err != nil {
		return ti, err
	}
	ti.Name, d.name = name, name
	nd, err := d.u32("dimension count")
	if err != nil {
		return ti, err
	}
	if nd > MaxDims {
		return ti, d.fail("%d dimensions, at most %d allowed", nd, MaxDims)
	}
	ti.Dims = make([]uint64, nd)
	for i := range ti.Dims {
		if ti.Dims[i], err = d.u64("dimension"); err != nil {
			return ti, err
		}
	}
	typ, err := d.u32("tensor type")
	if err != nil {
		return ti, err
	}
	ti.Type = kernels.DType(typ)
	if !ti.Type.Known() {
		return ti, fmt.Errorf("gguf: %s: tensor %q: %w: type id %d", d.path, name, kernels.ErrUnknownType, typ)
	}
	if ti.Offset, err = d.u64("tensor data offset"); err != nil {
		return ti, err
	}
	if _, err := checkShape(ti.Dims, ti.Type); err != nil {
		return ti, d.fail("%v", err)
	}
	return ti, nil
}

// checkShape checks that dims describe a tensor of type typ whose element
// count fits an int64 and whose first dimension is whole blocks, and returns
// its size in bytes.
func checkShape(dims []uint64, typ kernels.DType) (uint64, error) {
	n := uint64(1)
	for _, x := range dims {
		hi, lo := bits.Mul64(n, x)
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("shape %v: element count overflows int64", dims)
		}
		n = lo
	}
	bs := uint64(typ.BlockSize())
	if len(dims) > 0 && dims[0]%bs != 0 {
		return 0, fmt.Errorf("shape %v: row length %d is not a multiple of the %s block size %d", dims, dims[0], typ, bs)
	}
	if len(dims) == 0 && bs != 1 {
		return 0, fmt.Errorf("scalar of block type %s", typ)
	}
	hi, size := bits.Mul64(n/bs, uint64(typ.TypeSize()))
	if hi != 0 || size > math.MaxInt64 {
		return 0, fmt.Errorf("shape %v: %s data size overflows int64", dims, typ)
	}
	return size, nil
}
