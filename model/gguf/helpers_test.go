package gguf

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
)

// testTensor is a tensor for round trips: random bytes of the right size.
type testTensor struct {
	name string
	typ  kernels.DType
	dims []uint64
	data []byte
}

func newTestTensor(t testing.TB, rng *rand.Rand, name string, typ kernels.DType, dims ...uint64) testTensor {
	t.Helper()
	n := uint64(1)
	for _, d := range dims {
		n *= d
	}
	size, err := typ.RowSize(int(n))
	if err != nil {
		t.Fatalf("RowSize(%s, %d): %v", typ, n, err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return testTensor{name, typ, dims, data}
}

// sampleTensors has F32, F16, Q8_0 and Q4_K tensors with odd row counts and
// sizes that are not multiples of 32, so padding is exercised.
func sampleTensors(t testing.TB) []testTensor {
	rng := rand.New(rand.NewPCG(1, 2))
	return []testTensor{
		newTestTensor(t, rng, "token_embd.weight", kernels.F32, 7, 3),
		newTestTensor(t, rng, "blk.0.attn_q.weight", kernels.F16, 5, 9),
		newTestTensor(t, rng, "blk.0.ffn_gate_exps.weight", kernels.Q8_0, 64, 5, 3),
		newTestTensor(t, rng, "blk.0.ffn_down_exps.weight", kernels.Q4_K, 256, 3),
		newTestTensor(t, rng, "output_norm.weight", kernels.F32, 1),
	}
}

// sampleKVs covers every value type and an array of each, including empty
// arrays and arrays of arrays.
func sampleKVs() []KV {
	return []KV{
		{"general.architecture", "qwen3moe"},
		{"t.uint8", uint8(200)},
		{"t.int8", int8(-100)},
		{"t.uint16", uint16(60000)},
		{"t.int16", int16(-30000)},
		{"t.uint32", uint32(4000000000)},
		{"t.int32", int32(-2000000000)},
		{"t.float32", float32(-1.5e-7)},
		{"t.bool.true", true},
		{"t.bool.false", false},
		{"t.string", "héllo, wörld"},
		{"t.string.empty", ""},
		{"t.uint64", uint64(1) << 63},
		{"t.int64", int64(-1) << 62},
		{"t.float64", 3.141592653589793},
		{"a.uint8", []uint8{0, 1, 255}},
		{"a.int8", []int8{-128, 0, 127}},
		{"a.uint16", []uint16{0, 65535}},
		{"a.int16", []int16{-32768, 32767}},
		{"a.uint32", []uint32{1, 2, 3}},
		{"a.int32", []int32{-1, 0, 1 << 30}},
		{"a.float32", []float32{0.5, -2, 1e30}},
		{"a.bool", []bool{true, false, true}},
		{"a.string", []string{"<s>", "", "▁the", "\x00raw"}},
		{"a.uint64", []uint64{1 << 40}},
		{"a.int64", []int64{-5, 5}},
		{"a.float64", []float64{1e-300, -0.25}},
		{"a.empty.uint8", []uint8{}},
		{"a.empty.string", []string{}},
		{"a.empty.float64", []float64{}},
		{"a.nested", []any{[]int32{1, 2}, []string{"x"}, []any{[]bool{true}}, []uint8{}}},
		{"a.empty.nested", []any{}},
	}
}

// buildFile writes the sample metadata and tensors with the given version
// and alignment (0: default) and returns the bytes.
func buildFile(t testing.TB, version uint32, alignment uint32, kvs []KV, tensors []testTensor) []byte {
	t.Helper()
	w := NewWriter(version)
	if alignment != 0 {
		if err := w.AddKV(KeyAlignment, alignment); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range kvs {
		if err := w.AddKV(kv.Key, kv.Value); err != nil {
			t.Fatalf("AddKV(%q): %v", kv.Key, err)
		}
	}
	for _, tt := range tensors {
		if err := w.AddTensor(tt.name, tt.typ, tt.dims, tt.data); err != nil {
			t.Fatalf("AddTensor(%q): %v", tt.name, err)
		}
	}
	var buf bytes.Buffer
	n, err := w.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

func writeTemp(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// raw assembles GGUF bytes by hand for corrupt-file cases.
type raw struct{ b []byte }

func (r *raw) u8(v uint8) *raw   { r.b = append(r.b, v); return r }
func (r *raw) u32(v uint32) *raw { r.b = binary.LittleEndian.AppendUint32(r.b, v); return r }
func (r *raw) u64(v uint64) *raw { r.b = binary.LittleEndian.AppendUint64(r.b, v); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.b = append(r.b, s...); return r }
func (r *raw) header(version uint32, tensors, kvs uint64) *raw {
	r.b = append(r.b, "GGUF"...)
	return r.u32(version).u64(tensors).u64(kvs)
}

// tensor appends a tensor directory entry.
func (r *raw) tensor(name string, typ kernels.DType, offset uint64, dims ...uint64) *raw {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.u64(d)
	}
	return r.u32(uint32(typ)).u64(offset)
}

// pad pads to a multiple of a and then appends n zero bytes of data.
func (r *raw) pad(a, n int) *raw {
	for len(r.b)%a != 0 {
		r.b = append(r.b, 0)
	}
	r.b = append(r.b, make([]byte, n)...)
	return r
}
