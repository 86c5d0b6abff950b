package gguf

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
)

// TestTruncated cuts a small valid file at every byte before the end of its
// tensor data: each prefix must fail with ErrCorrupt naming the path.
func TestTruncated(t *testing.T) {
	kvs := []KV{
		{"general.architecture", "llama"},
		{"a.string", []string{"a", "bc"}},
		{"a.nested", []any{[]int16{1}, []bool{true}}},
		{"t.bool", true},
		{"t.f32", float32(1)},
	}
	tensors := sampleTensors(t)[:2]
	full := buildFile(t, 3, 0, kvs, tensors)
	f, err := Parse("full", full)
	if err != nil {
		t.Fatal(err)
	}
	var dataEnd uint64
	for _, ti := range f.Tensors {
		dataEnd = max(dataEnd, f.DataOffset+ti.Offset+ti.Size())
	}
	dir := t.TempDir()
	for n := range int(dataEnd) {
		path := filepath.Join(dir, "cut.gguf")
		if err := os.WriteFile(path, full[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := Open(path)
		if err == nil {
			f.Close()
			t.Fatalf("truncated to %d of %d bytes: Open succeeded", n, len(full))
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
			t.Fatalf("truncated to %d bytes: %v; want ErrCorrupt naming %s", n, err, path)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	// A minimal valid file: one F32 tensor of 8 elements (32 bytes).
	valid := func() *raw { return new(raw).header(3, 1, 0).tensor("w", kernels.F32, 0, 8) }
	cases := []struct {
		name    string
		file    []byte
		want    error  // errors.Is target
		mention string // must appear in the message
	}{
		{"valid", valid().pad(32, 32).b, nil, ""},
		{"empty", nil, ErrCorrupt, "magic"},
		{"bad magic", append([]byte("GGML"), valid().pad(32, 32).b[4:]...), ErrCorrupt, "magic"},
		{"version 1", new(raw).header(1, 0, 0).b, ErrUnsupportedVersion, "version 1"},
		{"version 4", new(raw).header(4, 0, 0).b, ErrUnsupportedVersion, "version 4"},
		{"big-endian", new(raw).header(3<<24, 0, 0).b, ErrUnsupportedVersion, "big-endian"},
		{"huge kv count", new(raw).header(3, 0, 1<<60).b, ErrCorrupt, "metadata entries"},
		{"huge tensor count", new(raw).header(3, 1<<60, 0).b, ErrCorrupt, "tensors"},
		{"huge counts overflow", new(raw).header(3, 1<<62, 1<<62).pad(1, 100).b, ErrCorrupt, "cannot fit"},
		{"huge string array", new(raw).header(3, 0, 1).str("k").u32(uint32(Array)).u32(uint32(String)).u64(1<<60).pad(1, 64).b,
			ErrCorrupt, `"k"`},
		{"huge uint8 array", new(raw).header(3, 0, 1).str("k").u32(uint32(Array)).u32(uint32(Uint8)).u64(1<<60).pad(1, 64).b,
			ErrCorrupt, "array of"},
		{"huge string", new(raw).header(3, 0, 1).str("k").u32(uint32(String)).u64(1<<60).pad(1, 64).b, ErrCorrupt, "length"},
		{"huge key", new(raw).header(3, 0, 1).u64(1<<62).pad(1, 64).b, ErrCorrupt, "key 0"},
		{"unknown value type", new(raw).header(3, 0, 1).str("k").u32(13).u32(0).b, ErrCorrupt, "value type 13"},
		{"unknown array type", new(raw).header(3, 0, 1).str("k").u32(uint32(Array)).u32(99).u64(0).b, ErrCorrupt, "element type 99"},
		{"bool not 0 or 1", new(raw).header(3, 0, 1).str("k").u32(uint32(Bool)).u8(2).b, ErrCorrupt, `"k"`},
		{"duplicate key", new(raw).header(3, 0, 2).str("k").u32(uint32(Uint8)).u8(1).str("k").u32(uint32(Uint8)).u8(2).pad(32, 0).b,
			ErrDuplicate, `"k"`},
		{"deep nesting", func() []byte {
			r := new(raw).header(3, 0, 1).str("k").u32(uint32(Array))
			for range 20 {
				r.u32(uint32(Array)).u64(1)
			}
			return r.u32(uint32(Uint8)).u64(0).b
		}(), ErrCorrupt, "nested"},
		{"alignment zero", new(raw).header(3, 0, 1).str(KeyAlignment).u32(uint32(Uint32)).u32(0).pad(32, 0).b, ErrCorrupt, KeyAlignment},
		{"alignment not power of two", new(raw).header(3, 0, 1).str(KeyAlignment).u32(uint32(Uint32)).u32(48).pad(48, 0).b,
			ErrCorrupt, KeyAlignment},
		{"alignment string", new(raw).header(3, 0, 1).str(KeyAlignment).u32(uint32(String)).str("32").pad(32, 0).b,
			ErrCorrupt, KeyAlignment},
		{"alignment huge", new(raw).header(3, 1, 1).str(KeyAlignment).u32(uint32(Uint64)).u64(1<<63).
			tensor("w", kernels.F32, 0, 8).pad(1, 32).b, ErrCorrupt, "past the end"},
		{"unknown tensor type", new(raw).header(3, 1, 0).tensor("w", kernels.DType(77), 0, 8).pad(32, 32).b,
			kernels.ErrUnknownType, `tensor "w": unknown tensor type: type id 77`},
		{"too many dims", new(raw).header(3, 1, 0).tensor("w", kernels.F32, 0, 1, 1, 1, 1, 8).pad(32, 32).b, ErrCorrupt, `"w"`},
		{"dims overflow", new(raw).header(3, 1, 0).tensor("w", kernels.F32, 0, 1<<32, 1<<32).pad(32, 32).b, ErrCorrupt, "overflow"},
		{"size overflow", new(raw).header(3, 1, 0).tensor("w", kernels.F32, 0, 1<<62).pad(32, 32).b, ErrCorrupt, "overflow"},
		{"row not whole blocks", new(raw).header(3, 1, 0).tensor("w", kernels.Q8_0, 0, 33).pad(32, 64).b, ErrCorrupt, "block size"},
		{"offset out of range", new(raw).header(3, 1, 0).tensor("w", kernels.F32, 64, 8).pad(32, 32).b, ErrCorrupt, "past the end"},
		{"offset huge", new(raw).header(3, 1, 0).tensor("w", kernels.F32, 1<<63, 8).pad(32, 32).b, ErrCorrupt, "past the end"},
		{"data truncated", new(raw).header(3, 1, 0).tensor("w", kernels.F32, 0, 8).pad(32, 31).b, ErrCorrupt, `"w"`},
		{"misaligned offset", new(raw).header(3, 1, 0).tensor("w", kernels.F32, 4, 8).pad(32, 64).b, ErrCorrupt, "alignment"},
		{"duplicate tensor", new(raw).header(3, 2, 0).tensor("w", kernels.F32, 0, 8).tensor("w", kernels.F32, 32, 8).pad(32, 64).b,
			ErrDuplicate, `"w"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, tc.file)
			f, err := Open(path)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				f.Close()
				return
			}
			if err == nil {
				f.Close()
				t.Fatalf("Open succeeded, want %v", tc.want)
			}
			t.Log(err)
			if !errors.Is(err, tc.want) {
				t.Errorf("error %q does not wrap %v", err, tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, tc.mention) {
				t.Errorf("error %q should mention %s and %q", msg, path, tc.mention)
			}
		})
	}
}

func TestOpenMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.gguf")
	_, err := Open(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Open(missing) = %v", err)
	}
	if _, err := Open(t.TempDir()); err == nil {
		t.Error("Open(directory) succeeded")
	}
}

func TestMissingTensor(t *testing.T) {
	f, err := Parse("m.gguf", buildFile(t, 3, 0, nil, sampleTensors(t)))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Tensor("nope")
	if !errors.Is(err, ErrMissingTensor) || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "m.gguf") {
		t.Errorf("Tensor(nope) = %v", err)
	}
	if f.HasTensor("nope") || !f.HasTensor("output_norm.weight") {
		t.Error("HasTensor wrong")
	}
}

func TestWriterErrors(t *testing.T) {
	f32 := func(n int) []byte { return make([]byte, 4*n) }
	cases := []struct {
		name string
		do   func(w *Writer) error
		want error
	}{
		{"version 1", func(*Writer) error { return NewWriter(1).AddKV("k", uint8(1)) }, ErrUnsupportedVersion},
		{"version 4 write", func(*Writer) error { _, err := NewWriter(4).WriteTo(nil); return err }, ErrUnsupportedVersion},
		{"go int", func(w *Writer) error { return w.AddKV("k", 1) }, ErrUnsupportedValue},
		{"go []int", func(w *Writer) error { return w.AddKV("k", []int{1}) }, ErrUnsupportedValue},
		{"map", func(w *Writer) error { return w.AddKV("k", map[string]int{}) }, ErrUnsupportedValue},
		{"nil", func(w *Writer) error { return w.AddKV("k", nil) }, ErrUnsupportedValue},
		{"[]any of scalar", func(w *Writer) error { return w.AddKV("k", []any{uint8(1)}) }, ErrUnsupportedValue},
		{"[]any of int", func(w *Writer) error { return w.AddKV("k", []any{[]int{1}}) }, ErrUnsupportedValue},
		{"too deep", func(w *Writer) error {
			var v any = []uint8{}
			for range maxArrayDepth {
				v = []any{v}
			}
			return w.AddKV("k", v)
		}, ErrUnsupportedValue},
		{"empty key", func(w *Writer) error { return w.AddKV("", uint8(1)) }, ErrUnsupportedValue},
		{"duplicate key", func(w *Writer) error {
			if err := w.AddKV("k", uint8(1)); err != nil {
				return err
			}
			return w.AddKV("k", uint8(2))
		}, ErrDuplicate},
		{"alignment uint64", func(w *Writer) error { return w.AddKV(KeyAlignment, uint64(64)) }, ErrUnsupportedValue},
		{"alignment 48", func(w *Writer) error { return w.AddKV(KeyAlignment, uint32(48)) }, ErrUnsupportedValue},
		{"alignment 0", func(w *Writer) error { return w.AddKV(KeyAlignment, uint32(0)) }, ErrUnsupportedValue},
		{"data too short", func(w *Writer) error { return w.AddTensor("w", kernels.F32, []uint64{8, 2}, f32(15)) }, ErrInvalidTensor},
		{"data too long", func(w *Writer) error { return w.AddTensor("w", kernels.Q8_0, []uint64{32}, make([]byte, 35)) }, ErrInvalidTensor},
		{"no dims", func(w *Writer) error { return w.AddTensor("w", kernels.F32, nil, f32(1)) }, ErrInvalidTensor},
		{"five dims", func(w *Writer) error { return w.AddTensor("w", kernels.F32, []uint64{1, 1, 1, 1, 1}, f32(1)) }, ErrInvalidTensor},
		{"partial block", func(w *Writer) error { return w.AddTensor("w", kernels.Q4_K, []uint64{128, 2}, make([]byte, 144)) }, ErrInvalidTensor},
		{"overflow", func(w *Writer) error { return w.AddTensor("w", kernels.F32, []uint64{1 << 40, 1 << 40}, nil) }, ErrInvalidTensor},
		{"unknown type", func(w *Writer) error { return w.AddTensor("w", kernels.DType(5), []uint64{32}, nil) }, kernels.ErrUnknownType},
		{"empty name", func(w *Writer) error { return w.AddTensor("", kernels.F32, []uint64{1}, f32(1)) }, ErrInvalidTensor},
		{"long name", func(w *Writer) error {
			return w.AddTensor(strings.Repeat("x", MaxTensorNameLen+1), kernels.F32, []uint64{1}, f32(1))
		}, ErrInvalidTensor},
		{"duplicate tensor", func(w *Writer) error {
			if err := w.AddTensor("w", kernels.F32, []uint64{1}, f32(1)); err != nil {
				return err
			}
			return w.AddTensor("w", kernels.F32, []uint64{1}, f32(1))
		}, ErrDuplicate},
		{"write to missing dir", func(w *Writer) error {
			return w.WriteFile(filepath.Join(t.TempDir(), "no", "such", "dir.gguf"))
		}, os.ErrNotExist},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(NewWriter(3))
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// failWriter fails after accepting limit bytes.
type failWriter struct{ limit int }

var errSink = errors.New("sink full")

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.limit {
		n := w.limit
		w.limit = 0
		return n, errSink
	}
	w.limit -= len(p)
	return len(p), nil
}

func TestWriteToError(t *testing.T) {
	w := NewWriter(3)
	for _, tt := range sampleTensors(t) {
		if err := w.AddTensor(tt.name, tt.typ, tt.dims, tt.data); err != nil {
			t.Fatal(err)
		}
	}
	full, err := w.WriteTo(&failWriter{limit: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{0, 10, 600, int(full) - 1} {
		n, err := w.WriteTo(&failWriter{limit: limit})
		if !errors.Is(err, errSink) || n != int64(limit) {
			t.Errorf("limit %d: WriteTo = %d, %v", limit, n, err)
		}
	}
}

// TestLyingCounts: a header claiming as many metadata entries or tensors
// as the file's bytes could hold is refused without first allocating for
// the claim (which was several times the file, tensor data included).
func TestLyingCounts(t *testing.T) {
	const size = 16 << 20
	for _, tc := range []struct {
		name         string
		tensors, kvs func(rem uint64) uint64
	}{
		{"metadata", func(uint64) uint64 { return 0 }, func(rem uint64) uint64 { return rem / 13 }},
		{"tensors", func(rem uint64) uint64 { return rem / 24 }, func(uint64) uint64 { return 0 }},
	} {
		hdr := new(raw).header(3, 0, 0)
		rem := uint64(size - len(hdr.b))
		b := make([]byte, size)
		copy(b, new(raw).header(3, tc.tensors(rem), tc.kvs(rem)).b)
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		_, err := Parse("lying", b)
		runtime.ReadMemStats(&m1)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", tc.name, err)
		}
		if got := m1.TotalAlloc - m0.TotalAlloc; got > size/4 {
			t.Errorf("%s: parsing a %d MiB file allocated %d MiB", tc.name, size>>20, got>>20)
		}
	}
}

// TestOverlappingTensors: two tensors sharing bytes are refused, naming
// both.
func TestOverlappingTensors(t *testing.T) {
	b := new(raw).header(3, 2, 0).
		tensor("a", kernels.F32, 0, 64).
		tensor("b", kernels.F32, 32, 8).
		pad(32, 256).b
	_, err := Parse("overlap", b)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"b"`) || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("overlapping tensors: %v, want ErrCorrupt naming both", err)
	}
}
