package model

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

// tensorOverride replaces a tensor of a rewritten file.
type tensorOverride struct {
	typ  kernels.DType
	dims []uint64
	data []byte
}

// rewrite builds the tiny synth model (mut changes its config), then
// rewrites its file with KV overrides (a nil value deletes the key) and
// tensor overrides.
func rewrite(t *testing.T, mut func(*synth.Config), kvs map[string]any, ts map[string]*tensorOverride) *gguf.File {
	t.Helper()
	w, err := synth.Build(tinyConfig(t, mut))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	src, err := gguf.Parse("src", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	nw := gguf.NewWriter(3)
	seen := map[string]bool{}
	for _, kv := range src.KVs {
		v := kv.Value
		if o, ok := kvs[kv.Key]; ok {
			seen[kv.Key] = true
			if o == nil {
				continue
			}
			v = o
		}
		if err := nw.AddKV(kv.Key, v); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range kvs {
		if !seen[k] && v != nil {
			if err := nw.AddKV(k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ti := range src.Tensors {
		_, data, _ := src.Tensor(ti.Name)
		typ, dims := ti.Type, ti.Dims
		if o, ok := ts[ti.Name]; ok {
			if o == nil {
				continue
			}
			typ, dims, data = o.typ, o.dims, o.data
		}
		if err := nw.AddTensor(ti.Name, typ, dims, data); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := nw.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestLoadRefusesLyingHeaders: hyperparameters no real model has, or whose
// products overflow, are refused with ErrInvalidModel, never a panic or a
// huge allocation before a tensor is read (block_count 2^40 panicked in
// makeslice; a legacy expert_count 2^40 ran out of memory; key_length 2^62
// wrapped the query width to 0 and bound zero-row matrices; context_length
// 2^62 wrapped the attention scratch).
func TestLoadRefusesLyingHeaders(t *testing.T) {
	dense := func(c *synth.Config) { c.Experts, c.TopK = 0, 0 }
	D := uint64(64)
	zeroRows := map[string]*tensorOverride{}
	for _, l := range []string{"0", "1"} {
		zeroRows["blk."+l+".attn_q.weight"] = &tensorOverride{kernels.F32, []uint64{D, 0}, nil}
		zeroRows["blk."+l+".attn_k.weight"] = &tensorOverride{kernels.F32, []uint64{D, 0}, nil}
		zeroRows["blk."+l+".attn_v.weight"] = &tensorOverride{kernels.F32, []uint64{D, 0}, nil}
		zeroRows["blk."+l+".attn_output.weight"] = &tensorOverride{kernels.F32, []uint64{0, D}, nil}
	}
	for _, tc := range []struct {
		name string
		mut  func(*synth.Config)
		kvs  map[string]any
		ts   map[string]*tensorOverride
	}{
		{"block_count 2^40", nil, map[string]any{"llama.block_count": uint64(1) << 40}, nil},
		{"legacy expert_count 2^40", func(c *synth.Config) { c.LegacyExperts = true },
			map[string]any{"llama.expert_count": uint64(1) << 40, "llama.expert_used_count": uint32(1)}, nil},
		{"key_length 2^62", dense, map[string]any{"llama.attention.key_length": uint64(1) << 62,
			"llama.attention.value_length": uint64(1) << 62, "llama.rope.dimension_count": uint64(2)}, zeroRows},
		{"context_length 2^62", dense, map[string]any{"llama.context_length": uint64(1) << 62}, nil},
		{"context_length 2^40", dense, map[string]any{"llama.context_length": uint64(1) << 40}, nil},
		// 512 query heads on one kv head and a 2^24 context: each thread's
		// attention scratch asked for 64 GiB (out of memory in NewRunner).
		{"context × query group", dense, map[string]any{"llama.context_length": uint32(1 << 24),
			"llama.attention.head_count": uint32(512), "llama.attention.head_count_kv": uint32(1),
			"llama.attention.key_length": uint32(2), "llama.attention.value_length": uint32(2),
			"llama.rope.dimension_count": uint32(2)}, groupShapes(D, 1024, 2)},
		// The tiny preset's 4 heads on 2 kv heads with a 2^24 context:
		// 8 query vectors of scratch per thread, 1 GiB.
		{"context 2^24, eight query vectors", nil, map[string]any{"llama.context_length": uint32(1 << 24)}, nil},
		// A dense model claiming 2^40 experts per token: NewRunner sized its
		// routing buffers by it (out of memory, makeslice panic).
		{"dense expert_used_count 2^40", dense, map[string]any{"llama.expert_used_count": uint64(1) << 40}, nil},
		{"dense expert_used_count 2", dense, map[string]any{"llama.expert_used_count": uint32(2)}, nil},
		{"rope.freq_base +Inf", nil, map[string]any{"llama.rope.freq_base": float32(math.Inf(1))}, nil},
		{"token_embd without rows", func(c *synth.Config) { c.Experts, c.TopK, c.TiedOutput = 0, 0, true }, nil, map[string]*tensorOverride{"token_embd.weight": {kernels.F32, []uint64{D, 0}, nil}}},
		{"vocab_size against token_embd", nil, map[string]any{"llama.vocab_size": uint32(100)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := rewrite(t, tc.mut, tc.kvs, tc.ts)
			if _, err := Load(f); !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("Load: %v, want ErrInvalidModel", err)
			}
		})
	}
}

// groupShapes are the two layers' attention weights for q query rows and kv
// key/value rows of a d-wide model.
func groupShapes(d, q, kv uint64) map[string]*tensorOverride {
	ts := map[string]*tensorOverride{}
	for _, l := range []string{"0", "1"} {
		ts["blk."+l+".attn_q.weight"] = &tensorOverride{kernels.F32, []uint64{d, q}, make([]byte, d*q*4)}
		ts["blk."+l+".attn_k.weight"] = &tensorOverride{kernels.F32, []uint64{d, kv}, make([]byte, d*kv*4)}
		ts["blk."+l+".attn_v.weight"] = &tensorOverride{kernels.F32, []uint64{d, kv}, make([]byte, d*kv*4)}
		ts["blk."+l+".attn_output.weight"] = &tensorOverride{kernels.F32, []uint64{q, d}, make([]byte, q*d*4)}
	}
	return ts
}

// TestLoadRefusesUncomputableTypes: a weight of a type the reader knows but
// no kernel multiplies (Q4_1, a common llama.cpp quantization) is refused
// at load, naming the tensor; it loaded and then crashed the first token.
func TestLoadRefusesUncomputableTypes(t *testing.T) {
	f := rewrite(t, func(c *synth.Config) { c.Experts, c.TopK = 0, 0 }, nil, map[string]*tensorOverride{
		"blk.0.attn_q.weight": {kernels.Q4_1, []uint64{64, 64}, make([]byte, 64*64/32*20)},
	})
	_, err := Load(f)
	if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "blk.0.attn_q.weight") || !strings.Contains(err.Error(), "no kernel") {
		t.Fatalf("Load of a Q4_1 attn_q: %v, want ErrInvalidModel naming the tensor", err)
	}
}

// TestTokenIDOutOfRange: a special token id past int32 is refused, not
// wrapped to another token (2^32+2 read as 2).
func TestTokenIDOutOfRange(t *testing.T) {
	f := rewrite(t, nil, map[string]any{"tokenizer.ggml.bos_token_id": uint64(1)<<32 + 2}, nil)
	if _, err := LoadTokenizer(f); !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "bos_token_id") {
		t.Fatalf("LoadTokenizer: %v, want ErrInvalidModel naming bos_token_id", err)
	}
}

// TestExpertFileIndexOutOfRange: an expert file whose layer would wrap to a
// negative int is refused (it passed Fits and indexed w.Blocks[-2^63]).
func TestExpertFileIndexOutOfRange(t *testing.T) {
	w, _ := testModel(t, tinyConfig(t, nil))
	b, err := EncodeExpertFile(w, 0, 0, "x")
	if err != nil {
		t.Fatal(err)
	}
	src, err := gguf.Parse("x", b)
	if err != nil {
		t.Fatal(err)
	}
	nw := gguf.NewWriter(3)
	for _, kv := range src.KVs {
		v := kv.Value
		if kv.Key == keyExpertLayer {
			v = uint64(1) << 63
		}
		if err := nw.AddKV(kv.Key, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, ti := range src.Tensors {
		_, d, _ := src.Tensor(ti.Name)
		if err := nw.AddTensor(ti.Name, ti.Type, ti.Dims, d); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "x.gguf")
	if err := nw.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := LoadExpertFile(f); !errors.Is(err, ErrInvalidModel) {
		t.Fatalf("LoadExpertFile with layer 2^63: %v, want ErrInvalidModel", err)
	}
	if err := (&ExpertFile{Layer: -1, Dim: w.Dim, FFN: w.FFN}).Fits(w); !errors.Is(err, ErrInvalidModel) {
		t.Errorf("Fits of layer -1: %v", err)
	}
}

// TestCheckTokenizer: a tokenizer with more or fewer tokens than the
// embedding has rows is refused, naming both counts; such a file loaded and
// then answered every request with "token outside the vocabulary", blaming
// the client.
func TestCheckTokenizer(t *testing.T) {
	f := rewrite(t, nil, nil, nil)
	w, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := LoadTokenizer(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckTokenizer(f, w, tok); err != nil {
		t.Fatalf("the synthesized model: %v", err)
	}
	short := *w
	short.Vocab = tok.VocabSize() - 1
	err = CheckTokenizer(f, &short, tok)
	want := fmt.Sprintf("tokenizer.ggml.tokens has %d tokens but token_embd.weight has %d rows", tok.VocabSize(), short.Vocab)
	if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), want) {
		t.Fatalf("CheckTokenizer: %v, want ErrInvalidModel: %s", err, want)
	}
}

// TestLoadRefusesRunawayChatTemplate: a file whose chat template cannot
// render a short conversation in the budget is refused at load, naming the
// key, instead of holding every chat request.
func TestLoadRefusesRunawayChatTemplate(t *testing.T) {
	defer func(b time.Duration) { chatTemplateBudget = b }(chatTemplateBudget)
	chatTemplateBudget = time.Millisecond
	f := rewrite(t, nil, map[string]any{"tokenizer.chat_template": "{% for a in 'x' * 1000 %}{% for b in 'x' * 1000 %}{% endfor %}{% endfor %}x"}, nil)
	if _, err := LoadTokenizer(f); !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "tokenizer.chat_template") {
		t.Fatalf("LoadTokenizer: %v, want ErrInvalidModel naming tokenizer.chat_template", err)
	}
}
