package gguf

import (
	"errors"
	"fmt"

	"github.com/conclave-ai/conclave/kernels"
)

// Sentinel errors. Every error returned by this package wraps one of these
// (or kernels.ErrUnknownType, or an os error from opening the file) and
// starts "gguf: <path>:"; test them with errors.Is.
var (
	// ErrMissingKey: a getter asked for a key the file does not have.
	ErrMissingKey = errors.New("missing key")
	// ErrWrongType: a key exists but its value cannot be read as the type
	// asked for (including an integer out of the requested range).
	ErrWrongType = errors.New("wrong value type")
	// ErrMissingTensor: the file has no tensor of the requested name.
	ErrMissingTensor = errors.New("missing tensor")
	// ErrCorrupt: the file is truncated or violates the GGUF format.
	ErrCorrupt = errors.New("corrupt file")
	// ErrUnsupportedVersion: a GGUF file of a version or byte order this
	// package does not read (v1, big-endian, or newer than v3).
	ErrUnsupportedVersion = errors.New("unsupported version")
	// ErrDuplicate: a key or tensor name occurs twice. Readers wrap it
	// together with ErrCorrupt.
	ErrDuplicate = errors.New("duplicate name")
	// ErrUnsupportedValue: Writer.AddKV was given a Go value with no GGUF
	// encoding, or an invalid value for a reserved key.
	ErrUnsupportedValue = errors.New("unsupported value")
	// ErrInvalidTensor: Writer.AddTensor was given an invalid name, shape or
	// a data length that does not match the shape and type.
	ErrInvalidTensor = errors.New("invalid tensor")
	// ErrClosed: tensor data was requested from a closed File.
	ErrClosed = errors.New("file closed")
)

// Format constants.
const (
	// Magic is the first four bytes of every GGUF file ("GGUF"), read as a
	// little-endian uint32.
	Magic uint32 = 0x46554747
	// DefaultAlignment is the alignment of the data section and of every
	// tensor's data, in bytes, when "general.alignment" is absent.
	DefaultAlignment = 32
	// KeyAlignment is the metadata key that overrides DefaultAlignment; its
	// value is a uint32 power of two.
	KeyAlignment = "general.alignment"
	// MaxDims is the largest number of dimensions a tensor may have.
	MaxDims = 4
	// MaxTensorNameLen is the longest tensor name, in bytes, that GGML-based
	// readers accept; Writer enforces it, Open does not.
	MaxTensorNameLen = 63
	// maxArrayDepth bounds nesting of arrays of arrays, in both directions.
	maxArrayDepth = 8
)

// ValueType is the type tag of a metadata value, numbered as in the GGUF
// specification.
type ValueType uint32

// Metadata value types.
const (
	Uint8   ValueType = 0
	Int8    ValueType = 1
	Uint16  ValueType = 2
	Int16   ValueType = 3
	Uint32  ValueType = 4
	Int32   ValueType = 5
	Float32 ValueType = 6
	Bool    ValueType = 7
	String  ValueType = 8
	Array   ValueType = 9
	Uint64  ValueType = 10
	Int64   ValueType = 11
	Float64 ValueType = 12
)

var valueTypeNames = [...]string{
	Uint8: "uint8", Int8: "int8", Uint16: "uint16", Int16: "int16",
	Uint32: "uint32", Int32: "int32", Float32: "float32", Bool: "bool",
	String: "string", Array: "array", Uint64: "uint64", Int64: "int64",
	Float64: "float64",
}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("value-type(%d)", uint32(t))
}

// Valid reports whether t is one of the types defined by the specification.
func (t ValueType) Valid() bool { return int(t) < len(valueTypeNames) }

// encodedMin is the fewest bytes a value of type t occupies in a file; the
// reader uses it to refuse counts that cannot fit in the bytes that remain.
func (t ValueType) encodedMin() uint64 {
	switch t {
	case Uint8, Int8, Bool:
		return 1
	case Uint16, Int16:
		return 2
	case Uint32, Int32, Float32:
		return 4
	case Uint64, Int64, Float64, String:
		return 8 // a string is at least its uint64 length
	case Array:
		return 12 // uint32 element type + uint64 count
	}
	return 0
}

// KV is one metadata entry. Value holds one of uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64, float64; an array is
// the matching typed slice ([]uint8 … []float64, []bool, []string), and an
// array of arrays is an []any whose elements are such slices (or []any).
type KV struct {
	Key   string
	Value any
}

// TensorInfo describes one tensor in the file.
type TensorInfo struct {
	Name string
	// Dims are the extents with ne[0] first: Dims[0] is the innermost
	// (contiguous, row) length, as GGUF stores them.
	Dims []uint64
	Type kernels.DType
	// Offset of the tensor's first byte, relative to the start of the data
	// section (File.DataOffset); a multiple of the file's alignment.
	Offset uint64
}

// Elements returns the number of elements: the product of Dims (1 for no
// dims). Open guarantees it does not overflow for tensors it returns.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Size returns the tensor's data size in bytes, or 0 if its type is unknown.
func (t TensorInfo) Size() uint64 {
	if !t.Type.Known() {
		return 0
	}
	return t.Elements() / uint64(t.Type.BlockSize()) * uint64(t.Type.TypeSize())
}

// valueTypeOf returns the GGUF type of a Go value, and for arrays the element
// type. It checks that v has an encoding, recursing into arrays of arrays.
func valueTypeOf(v any, depth int) (t, elem ValueType, err error) {
	switch v.(type) {
	case uint8:
		return Uint8, 0, nil
	case int8:
		return Int8, 0, nil
	case uint16:
		return Uint16, 0, nil
	case int16:
		return Int16, 0, nil
	case uint32:
		return Uint32, 0, nil
	case int32:
		return Int32, 0, nil
	case float32:
		return Float32, 0, nil
	case bool:
		return Bool, 0, nil
	case string:
		return String, 0, nil
	case uint64:
		return Uint64, 0, nil
	case int64:
		return Int64, 0, nil
	case float64:
		return Float64, 0, nil
	}
	if depth >= maxArrayDepth {
		return 0, 0, fmt.Errorf("%w: arrays nested deeper than %d", ErrUnsupportedValue, maxArrayDepth)
	}
	switch x := v.(type) {
	case []uint8:
		return Array, Uint8, nil
	case []int8:
		return Array, Int8, nil
	case []uint16:
		return Array, Uint16, nil
	case []int16:
		return Array, Int16, nil
	case []uint32:
		return Array, Uint32, nil
	case []int32:
		return Array, Int32, nil
	case []float32:
		return Array, Float32, nil
	case []bool:
		return Array, Bool, nil
	case []string:
		return Array, String, nil
	case []uint64:
		return Array, Uint64, nil
	case []int64:
		return Array, Int64, nil
	case []float64:
		return Array, Float64, nil
	case []any:
		for i, e := range x {
			if t, _, err := valueTypeOf(e, depth+1); err != nil {
				return 0, 0, fmt.Errorf("element %d: %w", i, err)
			} else if t != Array {
				return 0, 0, fmt.Errorf("%w: element %d of an []any is %T; only arrays may be nested", ErrUnsupportedValue, i, e)
			}
		}
		return Array, Array, nil
	}
	return 0, 0, fmt.Errorf("%w: Go type %T (use a sized type such as int64 or uint32, or a slice of one)", ErrUnsupportedValue, v)
}

// describe names the GGUF type of a decoded value for error messages,
// e.g. "uint32" or "array[string]".
func describe(v any) string {
	t, elem, err := valueTypeOf(v, 0)
	if err != nil {
		return fmt.Sprintf("%T", v)
	}
	if t == Array {
		return "array[" + elem.String() + "]"
	}
	return t.String()
}
