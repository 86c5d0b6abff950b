package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
)

// FuzzOpen feeds arbitrary bytes to Open through a file: it must return an
// error or a File whose every tensor slice and getter works, never panic.
// Run with: go test -fuzz=FuzzOpen ./model/gguf
func FuzzOpen(f *testing.F) {
	tensors := sampleTensors(f)
	small := []KV{{"general.architecture", "llama"}, {"a", []string{"x", "yz"}}, {"n", []any{[]uint16{1}}}}
	f.Add(buildFile(f, 3, 0, sampleKVs(), tensors))
	f.Add(buildFile(f, 2, 64, small, tensors[:2]))
	f.Add(buildFile(f, 3, 0, small, nil))
	f.Add(buildFile(f, 3, 0, nil, tensors[4:]))
	f.Add(new(raw).header(3, 1, 0).tensor("w", kernels.Q8_0, 0, 32).pad(32, 34).b)
	f.Add([]byte("GGUF"))
	f.Add([]byte{})

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.gguf")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		file, err := Open(path)
		if err != nil {
			if file != nil {
				t.Fatal("Open returned a File and an error")
			}
			return
		}
		defer file.Close()
		for _, ti := range file.Tensors {
			got, b, err := file.Tensor(ti.Name)
			if err != nil {
				t.Fatalf("Tensor(%q): %v", ti.Name, err)
			}
			if !reflect.DeepEqual(got, ti) || uint64(len(b)) != ti.Size() {
				t.Fatalf("Tensor(%q) = %+v with %d bytes, directory says %+v", ti.Name, got, len(b), ti)
			}
			if (file.DataOffset+ti.Offset)%file.Alignment != 0 {
				t.Fatalf("tensor %q misaligned", ti.Name)
			}
			_ = append([]byte(nil), b...) // touch every byte
		}
		for _, kv := range file.KVs {
			if v, ok := file.Value(kv.Key); !ok || describe(v) != describe(kv.Value) {
				t.Fatalf("Value(%q) disagrees with KVs", kv.Key)
			}
			getters := []func(string) error{
				func(k string) error { _, err := file.String(k); return err },
				func(k string) error { _, err := file.Uint(k); return err },
				func(k string) error { _, err := file.Int(k); return err },
				func(k string) error { _, err := file.Float(k); return err },
				func(k string) error { _, err := file.Bool(k); return err },
				func(k string) error { _, err := file.Strings(k); return err },
				func(k string) error { _, err := file.Float32s(k); return err },
				func(k string) error { _, err := file.Int32s(k); return err },
			}
			for _, g := range getters {
				if err := g(kv.Key); err != nil && !errors.Is(err, ErrWrongType) {
					t.Fatalf("getter on %q: %v is not ErrWrongType", kv.Key, err)
				}
			}
		}
		// What was read writes back to a file that reads the same, unless it
		// uses what only the reader tolerates (a non-uint32 alignment, long
		// or zero-dimensional tensor names).
		if file.Alignment > 1<<16 {
			return // valid, but rewriting would pad to gigabytes
		}
		w := NewWriter(file.Version)
		for _, kv := range file.KVs {
			if err := w.AddKV(kv.Key, kv.Value); err != nil {
				return
			}
		}
		for _, ti := range file.Tensors {
			_, b, _ := file.Tensor(ti.Name)
			if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, b); err != nil {
				return
			}
		}
		var buf bytes.Buffer
		if _, err := w.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		again, err := Parse("rewritten", buf.Bytes())
		if err != nil {
			t.Fatalf("rewritten file does not parse: %v", err)
		}
		if !reflect.DeepEqual(again.KVs, file.KVs) || !reflect.DeepEqual(stripOffsets(again.Tensors), stripOffsets(file.Tensors)) {
			t.Fatal("rewritten file reads differently")
		}
	})
}

func stripOffsets(ts []TensorInfo) []TensorInfo {
	out := make([]TensorInfo, len(ts))
	for i, t := range ts {
		t.Offset = 0
		out[i] = t
	}
	return out
}
