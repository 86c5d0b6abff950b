package gguf

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/conclave-ai/conclave/kernels"
)

// Writer builds a GGUF file: metadata in the order added, then the tensor
// directory and data in the order added, each tensor's data padded to the
// alignment. A Writer is not safe for concurrent use.
type Writer struct {
	version   uint32
	alignment uint64
	err       error // sticky: an invalid version given to NewWriter
	kvs       []KV
	keys      map[string]struct{}
	tensors   []pendingTensor
	names     map[string]struct{}
}

type pendingTensor struct {
	info TensorInfo
	data []byte
}

// NewWriter returns a Writer for GGUF version 2 or 3 (the layout is the
// same; 3 is current). Another version makes every later call fail.
func NewWriter(version uint32) *Writer {
	w := &Writer{
		version:   version,
		alignment: DefaultAlignment,
		keys:      map[string]struct{}{},
		names:     map[string]struct{}{},
	}
	if version != 2 && version != 3 {
		w.err = fmt.Errorf("gguf: writer: %w: version %d, want 2 or 3", ErrUnsupportedVersion, version)
	}
	return w
}

// AddKV appends a metadata entry. value must be one of the Go types listed
// on KV; slices are kept, not copied, until the file is written. Adding
// "general.alignment" (a uint32 power of two) sets the data alignment.
func (w *Writer) AddKV(key string, value any) error {
	if w.err != nil {
		return w.err
	}
	if key == "" {
		return fmt.Errorf("gguf: writer: %w: empty key", ErrUnsupportedValue)
	}
	if _, dup := w.keys[key]; dup {
		return fmt.Errorf("gguf: writer: key %q: %w", key, ErrDuplicate)
	}
	if _, _, err := valueTypeOf(value, 0); err != nil {
		return fmt.Errorf("gguf: writer: key %q: %w", key, err)
	}
	if key == KeyAlignment {
		a, ok := value.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf: writer: key %q: %w: want a uint32 power of two, found %s %v",
				key, ErrUnsupportedValue, describe(value), value)
		}
		w.alignment = uint64(a)
	}
	w.keys[key] = struct{}{}
	w.kvs = append(w.kvs, KV{Key: key, Value: value})
	return nil
}

// AddTensor appends a tensor. dims are ne[0] first (row length first), 1 to
// MaxDims of them; dims[0] must be a multiple of typ's block size and
// len(data) must be exactly the size they imply. data is kept, not copied,
// until the file is written.
func (w *Writer) AddTensor(name string, typ kernels.DType, dims []uint64, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if name == "" || len(name) > MaxTensorNameLen {
		return fmt.Errorf("gguf: writer: tensor %q: %w: name must be 1 to %d bytes", name, ErrInvalidTensor, MaxTensorNameLen)
	}
	if _, dup := w.names[name]; dup {
		return fmt.Errorf("gguf: writer: tensor %q: %w", name, ErrDuplicate)
	}
	if !typ.Known() {
		return fmt.Errorf("gguf: writer: tensor %q: %w: type id %d", name, kernels.ErrUnknownType, uint32(typ))
	}
	if len(dims) == 0 || len(dims) > MaxDims {
		return fmt.Errorf("gguf: writer: tensor %q: %w: %d dimensions, want 1 to %d", name, ErrInvalidTensor, len(dims), MaxDims)
	}
	size, err := checkShape(dims, typ)
	if err != nil {
		return fmt.Errorf("gguf: writer: tensor %q: %w: %v", name, ErrInvalidTensor, err)
	}
	if uint64(len(data)) != size {
		return fmt.Errorf("gguf: writer: tensor %q: %w: %s %v needs %d bytes, got %d",
			name, ErrInvalidTensor, typ, dims, size, len(data))
	}
	w.names[name] = struct{}{}
	w.tensors = append(w.tensors, pendingTensor{
		info: TensorInfo{Name: name, Dims: slices.Clone(dims), Type: typ},
		data: data,
	})
	return nil
}

// WriteTo writes the file to out and returns the bytes written. It may be
// called more than once.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint32(b, Magic)
	b = le.AppendUint32(b, w.version)
	b = le.AppendUint64(b, uint64(len(w.tensors)))
	b = le.AppendUint64(b, uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		b = appendString(b, kv.Key)
		t, _, _ := valueTypeOf(kv.Value, 0)
		b = le.AppendUint32(b, uint32(t))
		b = appendValue(b, kv.Value)
	}
	var off uint64
	for _, t := range w.tensors {
		b = appendString(b, t.info.Name)
		b = le.AppendUint32(b, uint32(len(t.info.Dims)))
		for _, d := range t.info.Dims {
			b = le.AppendUint64(b, d)
		}
		b = le.AppendUint32(b, uint32(t.info.Type))
		b = le.AppendUint64(b, off)
		off += w.padded(uint64(len(t.data)))
	}

	var n int64
	write := func(p []byte) error {
		m, err := out.Write(p)
		n += int64(m)
		return err
	}
	var zeros [4096]byte
	// pad writes zeros up to the next multiple of the alignment after size
	// bytes, in chunks: the alignment may be large.
	pad := func(size int) error {
		for k := w.padded(uint64(size)) - uint64(size); k > 0; {
			c := min(k, uint64(len(zeros)))
			if err := write(zeros[:c]); err != nil {
				return err
			}
			k -= c
		}
		return nil
	}
	if err := write(b); err != nil {
		return n, fmt.Errorf("gguf: writer: %w", err)
	}
	if err := pad(len(b)); err != nil {
		return n, fmt.Errorf("gguf: writer: %w", err)
	}
	for _, t := range w.tensors {
		if err := write(t.data); err != nil {
			return n, fmt.Errorf("gguf: writer: tensor %q: %w", t.info.Name, err)
		}
		if err := pad(len(t.data)); err != nil {
			return n, fmt.Errorf("gguf: writer: tensor %q: %w", t.info.Name, err)
		}
	}
	return n, nil
}

// WriteFile writes the file to path atomically: to a temporary file in the
// same directory, synced, then renamed over path.
func (w *Writer) WriteFile(path string) (err error) {
	if w.err != nil {
		return w.err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("gguf: writer: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := w.WriteTo(tmp); err != nil {
		return fmt.Errorf("gguf: writer: %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("gguf: writer: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("gguf: writer: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("gguf: writer: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("gguf: writer: %w", err)
	}
	return nil
}

// padded rounds n up to the alignment.
func (w *Writer) padded(n uint64) uint64 {
	return (n + w.alignment - 1) / w.alignment * w.alignment
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendValue encodes v, whose type valueTypeOf has accepted. Arrays carry
// their element type and length.
func appendValue(b []byte, v any) []byte {
	le := binary.LittleEndian
	switch x := v.(type) {
	case uint8:
		return append(b, x)
	case int8:
		return append(b, byte(x))
	case uint16:
		return le.AppendUint16(b, x)
	case int16:
		return le.AppendUint16(b, uint16(x))
	case uint32:
		return le.AppendUint32(b, x)
	case int32:
		return le.AppendUint32(b, uint32(x))
	case float32:
		return le.AppendUint32(b, math.Float32bits(x))
	case bool:
		return appendBool(b, x)
	case string:
		return appendString(b, x)
	case uint64:
		return le.AppendUint64(b, x)
	case int64:
		return le.AppendUint64(b, uint64(x))
	case float64:
		return le.AppendUint64(b, math.Float64bits(x))
	}
	_, elem, _ := valueTypeOf(v, 0)
	b = le.AppendUint32(b, uint32(elem))
	switch x := v.(type) {
	case []uint8:
		return appendSlice(b, x)
	case []int8:
		return appendSlice(b, x)
	case []uint16:
		return appendSlice(b, x)
	case []int16:
		return appendSlice(b, x)
	case []uint32:
		return appendSlice(b, x)
	case []int32:
		return appendSlice(b, x)
	case []float32:
		return appendSlice(b, x)
	case []bool:
		return appendSlice(b, x)
	case []string:
		return appendSlice(b, x)
	case []uint64:
		return appendSlice(b, x)
	case []int64:
		return appendSlice(b, x)
	case []float64:
		return appendSlice(b, x)
	case []any:
		return appendSlice(b, x)
	}
	panic(fmt.Sprintf("gguf: appendValue: unchecked type %T", v)) // valueTypeOf admitted it
}

func appendSlice[T any](b []byte, s []T) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	for _, e := range s {
		b = appendValue(b, any(e))
	}
	return b
}
