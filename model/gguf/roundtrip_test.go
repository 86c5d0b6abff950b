package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name      string
		version   uint32
		alignment uint32 // 0: default
	}{
		{"v3", 3, 0},
		{"v2", 2, 0},
		{"v3/align64", 3, 64},
		{"v2/align64", 2, 64},
		{"v3/align1", 3, 1},
		{"v3/align4096", 3, 4096},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kvs, tensors := sampleKVs(), sampleTensors(t)
			w := NewWriter(tc.version)
			var wantKVs []KV
			if tc.alignment != 0 {
				if err := w.AddKV(KeyAlignment, tc.alignment); err != nil {
					t.Fatal(err)
				}
				wantKVs = append(wantKVs, KV{KeyAlignment, tc.alignment})
			}
			wantKVs = append(wantKVs, kvs...)
			for _, kv := range kvs {
				if err := w.AddKV(kv.Key, kv.Value); err != nil {
					t.Fatalf("AddKV(%q): %v", kv.Key, err)
				}
			}
			for _, tt := range tensors {
				if err := w.AddTensor(tt.name, tt.typ, tt.dims, tt.data); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := w.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
				t.Errorf("WriteFile left %d entries in its directory, want 1", len(ents))
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()

			wantAlign := uint64(DefaultAlignment)
			if tc.alignment != 0 {
				wantAlign = uint64(tc.alignment)
			}
			if f.Version != tc.version || f.Alignment != wantAlign || f.Path != path {
				t.Errorf("Version, Alignment, Path = %d, %d, %q; want %d, %d, %q",
					f.Version, f.Alignment, f.Path, tc.version, wantAlign, path)
			}
			if !reflect.DeepEqual(f.KVs, wantKVs) {
				t.Errorf("KVs differ:\n got %#v\nwant %#v", f.KVs, wantKVs)
			}
			if f.DataOffset%wantAlign != 0 {
				t.Errorf("DataOffset %d not aligned to %d", f.DataOffset, wantAlign)
			}
			if len(f.Tensors) != len(tensors) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(tensors))
			}
			var end uint64
			for i, tt := range tensors {
				ti, data, err := f.Tensor(tt.name)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(ti, f.Tensors[i]) {
					t.Errorf("Tensor(%q) = %+v, directory has %+v", tt.name, ti, f.Tensors[i])
				}
				if ti.Name != tt.name || ti.Type != tt.typ || !reflect.DeepEqual(ti.Dims, tt.dims) {
					t.Errorf("tensor %d = %s %s %v, want %s %s %v", i, ti.Name, ti.Type, ti.Dims, tt.name, tt.typ, tt.dims)
				}
				if ti.Offset%wantAlign != 0 || (f.DataOffset+ti.Offset)%wantAlign != 0 {
					t.Errorf("tensor %q offset %d not aligned to %d", tt.name, ti.Offset, wantAlign)
				}
				if ti.Size() != uint64(len(tt.data)) || !bytes.Equal(data, tt.data) {
					t.Errorf("tensor %q data differs (size %d, want %d)", tt.name, ti.Size(), len(tt.data))
				}
				if cap(data) != len(data) {
					t.Errorf("tensor %q data slice has spare capacity %d", tt.name, cap(data)-len(data))
				}
				end = max(end, ti.Offset+ti.Size())
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := (f.DataOffset + end + wantAlign - 1) / wantAlign * wantAlign; uint64(st.Size()) != want {
				t.Errorf("file is %d bytes, want %d (data padded to alignment)", st.Size(), want)
			}

			// The in-memory parser agrees with Open.
			raw, _ := os.ReadFile(path)
			g, err := Parse("mem", raw)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g.KVs, f.KVs) || !reflect.DeepEqual(g.Tensors, f.Tensors) || g.DataOffset != f.DataOffset {
				t.Error("Parse and Open disagree")
			}
			// Writing the same Writer twice gives the same bytes.
			var buf bytes.Buffer
			if _, err := w.WriteTo(&buf); err != nil || !bytes.Equal(buf.Bytes(), raw) {
				t.Errorf("WriteTo differs from WriteFile (err %v)", err)
			}
		})
	}
}

func TestEmptyFile(t *testing.T) {
	for _, v := range []uint32{2, 3} {
		t.Run(map[uint32]string{2: "v2", 3: "v3"}[v], func(t *testing.T) {
			b := buildFile(t, v, 0, nil, nil)
			if len(b) != 32 { // 24-byte header padded to 32
				t.Errorf("empty file is %d bytes, want 32", len(b))
			}
			f, err := Open(writeTemp(t, b))
			if err != nil {
				t.Fatal(err)
			}
			if len(f.KVs) != 0 || len(f.Tensors) != 0 {
				t.Errorf("got %d KVs, %d tensors", len(f.KVs), len(f.Tensors))
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	tensors := sampleTensors(t)
	f, err := Open(writeTemp(t, buildFile(t, 3, 0, sampleKVs(), tensors)))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := f.Tensor(tensors[0].name); !errors.Is(err, ErrClosed) {
		t.Errorf("Tensor after Close: %v, want ErrClosed", err)
	}
	if s, err := f.String("general.architecture"); err != nil || s != "qwen3moe" {
		t.Errorf("metadata after Close: %q, %v", s, err)
	}
}
