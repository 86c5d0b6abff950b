package kernels

import "fmt"

// DType is a tensor element type, numbered as GGML/GGUF numbers them so a
// GGUF tensor's type field converts directly.
type DType uint32

// The GGML type ids this project knows. Ids not listed here are rejected by
// the GGUF reader with ErrUnknownType.
const (
	F32  DType = 0
	F16  DType = 1
	Q4_0 DType = 2
	Q4_1 DType = 3
	Q8_0 DType = 8
	Q8_1 DType = 9
	Q4_K DType = 12
	Q6_K DType = 14
	Q8_K DType = 15
	BF16 DType = 30
)

// QK is the block length of the legacy quant formats (Q4_0, Q8_0);
// QKK is the super-block length of the K-quants (Q4_K, Q6_K, Q8_K).
const (
	QK  = 32
	QKK = 256
)

// ErrUnknownType is returned for a type id this project cannot handle.
var ErrUnknownType = fmt.Errorf("unknown tensor type")

type typeInfo struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
}

var types = map[DType]typeInfo{
	F32:  {"F32", 1, 4},
	F16:  {"F16", 1, 2},
	BF16: {"BF16", 1, 2},
	Q4_0: {"Q4_0", QK, 2 + QK/2},
	Q4_1: {"Q4_1", QK, 4 + QK/2},
	Q8_0: {"Q8_0", QK, 2 + QK},
	Q8_1: {"Q8_1", QK, 4 + QK},
	Q4_K: {"Q4_K", QKK, 2 + 2 + 12 + QKK/2},
	Q6_K: {"Q6_K", QKK, QKK/2 + QKK/4 + QKK/16 + 2},
	Q8_K: {"Q8_K", QKK, 4 + QKK + QKK/16*2},
}

// Known reports whether t is a type this package knows the layout of.
func (t DType) Known() bool { _, ok := types[t]; return ok }

func (t DType) String() string {
	if ti, ok := types[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockSize is the number of elements in one block (1 for float types).
func (t DType) BlockSize() int { return types[t].blockSize }

// TypeSize is the number of bytes in one block.
func (t DType) TypeSize() int { return types[t].typeSize }

// RowSize returns the bytes taken by n elements of type t. n must be a
// multiple of the block size.
func (t DType) RowSize(n int) (int, error) {
	ti, ok := types[t]
	if !ok {
		return 0, fmt.Errorf("%w: %d", ErrUnknownType, uint32(t))
	}
	if n%ti.blockSize != 0 {
		return 0, fmt.Errorf("kernels: %d elements is not a multiple of the %s block size %d", n, ti.name, ti.blockSize)
	}
	return n / ti.blockSize * ti.typeSize, nil
}

// ParseDType parses a type name such as "q8_0" or "F16" (case-insensitive).
func ParseDType(s string) (DType, error) {
	for t, ti := range types {
		if equalFold(ti.name, s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownType, s)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
