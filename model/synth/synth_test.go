package synth_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/sample"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/model/tokenizer"
)

func tiny(t *testing.T, mutate func(*synth.Config)) synth.Config {
	t.Helper()
	c, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&c)
	}
	return c
}

// build synthesizes c in memory and returns the file bytes.
func build(t *testing.T, c synth.Config) []byte {
	t.Helper()
	w, err := synth.Build(c)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// load writes c to a temporary file and opens it with gguf and model.Load;
// the file stays open until the test ends.
func load(t *testing.T, c synth.Config) (*gguf.File, *model.Weights) {
	t.Helper()
	return testmodel.Load(t, c)
}

func TestDeterministic(t *testing.T) {
	c := tiny(t, nil)
	a, b := build(t, c), build(t, c)
	if !bytes.Equal(a, b) {
		t.Fatal("two Builds of the same config differ")
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := synth.Write(c, path); err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(written, a) {
		t.Error("Write and Build+WriteTo give different bytes")
	}
	for _, tc := range []struct {
		name   string
		mutate func(*synth.Config)
	}{
		{"seed", func(c *synth.Config) { c.Seed++ }},
		{"type", func(c *synth.Config) { c.Type = kernels.Q8_0 }},
		{"legacy experts", func(c *synth.Config) { c.LegacyExperts = true }},
	} {
		t.Run(tc.name+" changes the file", func(t *testing.T) {
			if bytes.Equal(build(t, tiny(t, tc.mutate)), a) {
				t.Errorf("same bytes as the tiny preset")
			}
		})
	}
}

func TestPresets(t *testing.T) {
	type shape struct {
		dim, layers, heads, kvHeads, ffn, experts, topK, vocab, ctx int
		typ                                                         kernels.DType
	}
	for _, tc := range []struct {
		name string
		want shape
	}{
		{"tiny", shape{64, 2, 4, 2, 96, 4, 2, 512, 256, kernels.F32}},
		{"demo", shape{256, 4, 8, 4, 512, 8, 2, 4096, 1024, kernels.Q8_0}},
		// bench is ~690 MB when written: only its shape is checked.
		{"bench", shape{1024, 8, 16, 8, 2816, 8, 2, 32000, 2048, kernels.Q8_0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := synth.Preset(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			got := shape{c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFN, c.Experts, c.TopK, c.Vocab, c.Ctx, c.Type}
			if got != tc.want {
				t.Errorf("shape %+v, want %+v", got, tc.want)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("preset does not validate: %v", err)
			}
			if c.Name != "conclave-synth-"+tc.name || c.Seed == 0 || c.RopeBase != 10000 || c.NormEps != 1e-5 {
				t.Errorf("name %q seed %d rope base %g norm eps %g", c.Name, c.Seed, c.RopeBase, c.NormEps)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		if _, err := synth.Preset("huge"); !errors.Is(err, synth.ErrInvalidConfig) {
			t.Errorf("Preset(huge) = %v, want ErrInvalidConfig", err)
		}
	})
}

func TestTinyLoads(t *testing.T) {
	f, w := load(t, tiny(t, nil))
	if arch, _ := f.String("general.architecture"); arch != "llama" {
		t.Errorf("architecture %q", arch)
	}
	if name, _ := f.String("general.name"); name != "conclave-synth-tiny" {
		t.Errorf("name %q", name)
	}
	c := w.Config
	if c.Arch != "llama" || c.Dim != 64 || c.Layers != 2 || c.Heads != 4 || c.KVHeads != 2 || c.HeadDim != 16 ||
		c.FFN != 96 || c.Experts != 4 || c.TopK != 2 || c.Vocab != 512 || c.Ctx != 256 ||
		c.RopeBase != 10000 || c.RopeDim != 16 || c.NormEps != 1e-5 || c.TiedOutput {
		t.Errorf("config %+v", c)
	}
	if !w.MoE() || len(w.Blocks) != 2 || len(w.Blocks[0].Experts) != 4 || w.Blocks[0].Dense != nil {
		t.Errorf("MoE %v, %d blocks", w.MoE(), len(w.Blocks))
	}
	if types := w.TensorTypes(); len(types) != 1 || types["F32"] == 0 {
		t.Errorf("tensor types %v, want F32 only", types)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*synth.Config)
		valid  bool
	}{
		{"tiny", nil, true},
		{"dense", func(c *synth.Config) { c.Experts, c.TopK = 0, 0 }, true},
		{"top-k equals experts", func(c *synth.Config) { c.TopK = c.Experts }, true},
		{"f16", func(c *synth.Config) { c.Type = kernels.F16 }, true},
		{"q8_0", func(c *synth.Config) { c.Type = kernels.Q8_0 }, true},
		{"q4_0", func(c *synth.Config) { c.Type = kernels.Q4_0 }, true},
		{"smallest vocab", func(c *synth.Config) { c.Vocab = 3 + 256 + 1 }, true},
		{"zero dim", func(c *synth.Config) { c.Dim = 0 }, false},
		{"zero layers", func(c *synth.Config) { c.Layers = 0 }, false},
		{"zero heads", func(c *synth.Config) { c.Heads = 0 }, false},
		{"zero kv heads", func(c *synth.Config) { c.KVHeads = 0 }, false},
		{"zero ffn", func(c *synth.Config) { c.FFN = 0 }, false},
		{"zero ctx", func(c *synth.Config) { c.Ctx = 0 }, false},
		{"negative dim", func(c *synth.Config) { c.Dim = -64 }, false},
		{"dim not divisible by heads", func(c *synth.Config) { c.Dim = 60 }, false},
		{"odd head size", func(c *synth.Config) { c.Dim, c.Heads, c.KVHeads = 96, 32, 32 }, false}, // head dim 3
		{"heads not a multiple of kv heads", func(c *synth.Config) { c.KVHeads = 3 }, false},
		{"negative experts", func(c *synth.Config) { c.Experts = -1 }, false},
		{"top-k zero", func(c *synth.Config) { c.TopK = 0 }, false},
		{"top-k above experts", func(c *synth.Config) { c.TopK = 5 }, false},
		{"vocab too small", func(c *synth.Config) { c.Vocab = 259 }, false},
		{"q4_1 weights", func(c *synth.Config) { c.Type = kernels.Q4_1 }, false},
		{"dim not a block multiple", func(c *synth.Config) { c.Type, c.Dim, c.Heads, c.KVHeads = kernels.Q8_0, 48, 4, 2 }, false},
		{"ffn not a block multiple", func(c *synth.Config) { c.Type, c.FFN = kernels.Q4_0, 80 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tiny(t, tc.mutate)
			err := c.Validate()
			if tc.valid {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, synth.ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
			if _, err := synth.Build(c); !errors.Is(err, synth.ErrInvalidConfig) {
				t.Errorf("Build = %v, want ErrInvalidConfig", err)
			}
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := synth.Write(c, path); !errors.Is(err, synth.ErrInvalidConfig) {
				t.Errorf("Write = %v, want ErrInvalidConfig", err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("Write of an invalid config left a file (stat: %v)", err)
			}
		})
	}
}

func TestVariantsLoad(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*synth.Config)
		check  func(t *testing.T, f *gguf.File, w *model.Weights)
	}{
		{"legacy experts", func(c *synth.Config) { c.LegacyExperts = true }, func(t *testing.T, f *gguf.File, w *model.Weights) {
			if !f.HasTensor("blk.0.ffn_gate.3.weight") || f.HasTensor("blk.0.ffn_gate_exps.weight") {
				t.Errorf("want per-expert tensors, not merged ones")
			}
			if w.Experts != 4 || len(w.Blocks[1].Experts) != 4 {
				t.Errorf("%d experts", w.Experts)
			}
		}},
		{"tied output", func(c *synth.Config) { c.TiedOutput = true }, func(t *testing.T, f *gguf.File, w *model.Weights) {
			if f.HasTensor("output.weight") || !w.TiedOutput {
				t.Errorf("output.weight present %v, tied %v", f.HasTensor("output.weight"), w.TiedOutput)
			}
		}},
		{"dense", func(c *synth.Config) { c.Experts, c.TopK = 0, 0 }, func(t *testing.T, f *gguf.File, w *model.Weights) {
			if w.MoE() || w.Blocks[0].Dense == nil || f.HasKey("llama.expert_count") {
				t.Errorf("MoE %v, dense FFN %v", w.MoE(), w.Blocks[0].Dense != nil)
			}
		}},
		{"q8_0", func(c *synth.Config) { c.Type = kernels.Q8_0 }, func(t *testing.T, f *gguf.File, w *model.Weights) {
			if ft, _ := f.Uint("general.file_type"); ft != 7 || w.TensorTypes()["Q8_0"] == 0 {
				t.Errorf("file type %d, tensor types %v", ft, w.TensorTypes())
			}
		}},
		{"q4_0 dense legacy-free", func(c *synth.Config) { c.Type, c.Experts, c.TopK = kernels.Q4_0, 0, 0 }, func(t *testing.T, f *gguf.File, w *model.Weights) {
			if ft, _ := f.Uint("general.file_type"); ft != 2 || w.TensorTypes()["Q4_0"] == 0 {
				t.Errorf("file type %d, tensor types %v", ft, w.TensorTypes())
			}
		}},
		{"f16", func(c *synth.Config) { c.Type = kernels.F16 }, func(t *testing.T, f *gguf.File, w *model.Weights) {
			if ft, _ := f.Uint("general.file_type"); ft != 1 || w.TensorTypes()["F16"] == 0 {
				t.Errorf("file type %d, tensor types %v", ft, w.TensorTypes())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, w := load(t, tiny(t, tc.mutate))
			tc.check(t, f, w)
			// Every variant must run.
			if got := greedy(t, w, []int32{1, 300, 301}, 4); len(got) != 4 {
				t.Errorf("generated %v", got)
			}
		})
	}
}

func TestTokenizer(t *testing.T) {
	f, _ := load(t, tiny(t, nil))
	tok, err := model.LoadTokenizer(f)
	if err != nil {
		t.Fatal(err)
	}
	if tok.BOS() != 1 || tok.EOS() != 2 || tok.VocabSize() != 512 {
		t.Errorf("BOS %d EOS %d vocab %d, want 1, 2, 512", tok.BOS(), tok.EOS(), tok.VocabSize())
	}
	if !tok.IsEOG(2) || tok.IsEOG(1) {
		t.Errorf("IsEOG(2) %v IsEOG(1) %v", tok.IsEOG(2), tok.IsEOG(1))
	}
	for _, s := range []string{
		"Hello world, the expert cluster!",
		"hello",
		"Mixed CASE 123 and ünïcödé → bytes",
	} {
		t.Run(s, func(t *testing.T) {
			ids := tok.Encode(s, false, false)
			if len(ids) == 0 {
				t.Fatal("no tokens")
			}
			// SentencePiece prepends a space to the text.
			if got := tok.Decode(ids); got != " "+s {
				t.Errorf("Decode(Encode(%q)) = %q, want %q", s, got, " "+s)
			}
			withBOS := tok.Encode(s, true, false)
			if withBOS[0] != 1 || len(withBOS) != len(ids)+1 {
				t.Errorf("Encode with specials = %v, want BOS then %v", withBOS, ids)
			}
			if withBOS[len(withBOS)-1] == 2 {
				t.Errorf("EOS added: add_eos_token is false")
			}
		})
	}
	t.Run("words are single pieces", func(t *testing.T) {
		// A vocabulary as large as the demo preset's holds common words
		// with the space mark, so a known word does not fall back to
		// letters. (The tiny preset's 512 tokens stop before the words.)
		data := build(t, tiny(t, func(c *synth.Config) { c.Vocab, c.Layers = 4096, 1 }))
		f, err := gguf.Parse("vocab4096", data)
		if err != nil {
			t.Fatal(err)
		}
		big, err := model.LoadTokenizer(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, word := range []string{"expert", "cluster", "hello", "the"} {
			if ids := big.Encode(word, false, false); len(ids) != 1 || big.Piece(ids[0]) != "▁"+word {
				t.Errorf("Encode(%q) = %v, want the one piece ▁%s", word, ids, word)
			}
		}
		s := "Hello world, the expert cluster!"
		if got := big.Decode(big.Encode(s, false, false)); got != " "+s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
	})
	t.Run("chat template", func(t *testing.T) {
		if tok.ChatTemplate() != synth.MixtralTemplate {
			t.Errorf("chat template is not the Mixtral one")
		}
		got, err := tok.ApplyChatTemplate([]tokenizer.Message{{Role: "user", Content: "hi"}}, true)
		if err != nil {
			t.Fatal(err)
		}
		if want := "<s>[INST] hi [/INST]"; got != want {
			t.Errorf("rendered %q, want %q", got, want)
		}
		ids := tok.Encode(got, false, true)
		if len(ids) == 0 || ids[0] != 1 {
			t.Errorf("rendered prompt encodes to %v, want BOS first", ids)
		}
		// Mixtral's template has no system role: a system message is folded
		// into the user turn, as llama.cpp's server does.
		if tok.SupportsSystemRole() {
			t.Errorf("the Mixtral template reports a system role")
		}
		got, err = tok.ApplyChatTemplate([]tokenizer.Message{{Role: "system", Content: "x"}, {Role: "user", Content: "hi"}}, true)
		if want := "<s>[INST] x\nhi [/INST]"; err != nil || got != want {
			t.Errorf("system and user rendered %q, %v; want %q", got, err, want)
		}
	})
}

// greedy decodes n tokens greedily after prompt.
func greedy(t *testing.T, w *model.Weights, prompt []int32, n int) []int32 {
	t.Helper()
	pool := kernels.NewPool(2)
	defer pool.Close()
	cache, err := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: len(prompt) + n, KVDim: w.KVDim(), Type: kernels.F32})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sample.New(sample.DefaultConfig(), w.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := model.NewRunner(w, pool, len(prompt)).Generate(context.Background(), cache, prompt, n, s, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLogitsNotFlat checks that the weight scale gives the model opinions:
// a random model whose logits are all alike would decode one token forever
// and make parity and sampling tests meaningless.
func TestLogitsNotFlat(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*synth.Config)
	}{
		{"tiny", nil},
		{"wider", func(c *synth.Config) { c.Dim, c.Heads, c.KVHeads = 256, 8, 4 }}, // std falls as 1/√dim
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, w := load(t, tiny(t, tc.mutate))
			pool := kernels.NewPool(2)
			defer pool.Close()
			tokens := []int32{1, 300, 301, 302, 303}
			cache, err := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: len(tokens), KVDim: w.KVDim(), Type: kernels.F32})
			if err != nil {
				t.Fatal(err)
			}
			logits, err := model.NewRunner(w, pool, len(tokens)).Prefill(context.Background(), cache, tokens, 0, true, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(logits) != len(tokens)*w.Vocab {
				t.Fatalf("%d logits, want %d", len(logits), len(tokens)*w.Vocab)
			}
			for p := range tokens {
				if sd := stddev(logits[p*w.Vocab : (p+1)*w.Vocab]); !(sd > 0.5) {
					t.Errorf("position %d: logit standard deviation %.3f, want > 0.5", p, sd)
				}
			}

			out := greedy(t, w, []int32{1, 300}, 32)
			distinct := map[int32]bool{}
			for _, id := range out {
				distinct[id] = true
			}
			if len(distinct) < 2 {
				t.Errorf("32 greedy tokens are all %d", out[0])
			}
		})
	}
}

func stddev(x []float32) float64 {
	var sum, sq float64
	for _, v := range x {
		sum += float64(v)
	}
	mean := sum / float64(len(x))
	for _, v := range x {
		sq += (float64(v) - mean) * (float64(v) - mean)
	}
	return math.Sqrt(sq / float64(len(x)))
}
