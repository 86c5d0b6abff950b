package synth

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/gguf"
)

// ErrInvalidConfig is wrapped by Validate's errors.
var ErrInvalidConfig = errors.New("synth: invalid config")

// Config describes the model to synthesize.
type Config struct {
	Dim, Layers, Heads, KVHeads int
	FFN                         int // hidden size of each expert (or the dense FFN)
	Experts, TopK               int // Experts 0 writes a dense llama model
	Vocab, Ctx                  int
	Type                        kernels.DType // weight matrices; norms and the gate stay F32
	Seed                        uint64
	// LegacyExperts writes one tensor per expert (blk.N.ffn_gate.E.weight)
	// instead of the merged blk.N.ffn_gate_exps.weight.
	LegacyExperts bool
	// TiedOutput leaves out output.weight so the output shares token_embd.
	TiedOutput bool
	RopeBase   float32
	NormEps    float32
	Name       string
}

// Preset returns a named configuration: tiny (tests and parity), demo (make
// run), bench (the performance benchmark shape).
func Preset(name string) (Config, error) {
	c := Config{Seed: 1, RopeBase: 10000, NormEps: 1e-5, Type: kernels.F32}
	switch name {
	case "tiny":
		c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFN, c.Experts, c.TopK, c.Vocab, c.Ctx = 64, 2, 4, 2, 96, 4, 2, 512, 256
	case "demo":
		c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFN, c.Experts, c.TopK, c.Vocab, c.Ctx = 256, 4, 8, 4, 512, 8, 2, 4096, 1024
		c.Type = kernels.Q8_0
	case "bench":
		c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFN, c.Experts, c.TopK, c.Vocab, c.Ctx = 1024, 8, 16, 8, 2816, 8, 2, 32000, 2048
		c.Type = kernels.Q8_0
	default:
		return c, fmt.Errorf("%w: unknown preset %q (tiny, demo, bench)", ErrInvalidConfig, name)
	}
	c.Name = "conclave-synth-" + name
	return c, nil
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Dim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FFN <= 0 || c.Ctx <= 0:
		return fmt.Errorf("%w: dim, layers, heads, kv heads, ffn and ctx must be positive", ErrInvalidConfig)
	case c.Dim%c.Heads != 0 || (c.Dim/c.Heads)%2 != 0:
		return fmt.Errorf("%w: dim %d must split into %d heads of even size", ErrInvalidConfig, c.Dim, c.Heads)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%w: heads %d not a multiple of kv heads %d", ErrInvalidConfig, c.Heads, c.KVHeads)
	case c.Experts < 0 || (c.Experts > 0 && (c.TopK < 1 || c.TopK > c.Experts)):
		return fmt.Errorf("%w: %d experts with top-%d", ErrInvalidConfig, c.Experts, c.TopK)
	case c.Vocab < minVocab:
		return fmt.Errorf("%w: vocab %d is below the %d tokens the tokenizer needs", ErrInvalidConfig, c.Vocab, minVocab)
	}
	switch c.Type {
	case kernels.F32, kernels.F16, kernels.Q8_0, kernels.Q4_0:
	default:
		return fmt.Errorf("%w: weight type %v (want f32, f16, q8_0 or q4_0)", ErrInvalidConfig, c.Type)
	}
	bs := c.Type.BlockSize()
	if c.Dim%bs != 0 || c.FFN%bs != 0 {
		return fmt.Errorf("%w: dim %d and ffn %d must be multiples of the %v block size %d", ErrInvalidConfig, c.Dim, c.FFN, c.Type, bs)
	}
	return nil
}

// std is the standard deviation of random weights: 0.15 for the tiny shape,
// falling as 1/√dim so that logits keep a similar spread (≈1.2) at any width.
func (c Config) std() float64 { return 0.15 * math.Sqrt(64/float64(c.Dim)) }

// Build synthesizes the model in memory as a GGUF writer.
func Build(c Config) (*gguf.Writer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w := gguf.NewWriter(3)
	hd := c.Dim / c.Heads
	kv := []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "general.name", Value: c.Name},
		{Key: "general.alignment", Value: uint32(32)},
		{Key: "general.file_type", Value: fileType(c.Type)},
		{Key: "llama.context_length", Value: uint32(c.Ctx)},
		{Key: "llama.embedding_length", Value: uint32(c.Dim)},
		{Key: "llama.block_count", Value: uint32(c.Layers)},
		{Key: "llama.feed_forward_length", Value: uint32(c.FFN)},
		{Key: "llama.attention.head_count", Value: uint32(c.Heads)},
		{Key: "llama.attention.head_count_kv", Value: uint32(c.KVHeads)},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: c.NormEps},
		{Key: "llama.rope.freq_base", Value: c.RopeBase},
		{Key: "llama.rope.dimension_count", Value: uint32(hd)},
		{Key: "llama.vocab_size", Value: uint32(c.Vocab)},
	}
	if c.Experts > 0 {
		kv = append(kv,
			gguf.KV{Key: "llama.expert_count", Value: uint32(c.Experts)},
			gguf.KV{Key: "llama.expert_used_count", Value: uint32(c.TopK)})
	}
	kv = append(kv, tokenizerKVs(c.Vocab)...)
	for _, e := range kv {
		if err := w.AddKV(e.Key, e.Value); err != nil {
			return nil, err
		}
	}

	// Every tensor draws from its own stream, seeded by (seed, tensor
	// index), so tensors can be generated in parallel and the file is the
	// same whatever the machine.
	var specs []tensorSpec
	add := func(name string, typ kernels.DType, std, mean float64, dims ...uint64) {
		specs = append(specs, tensorSpec{name: name, typ: typ, std: std, mean: mean, dims: dims})
	}
	s := c.std()
	D, F, V, E := uint64(c.Dim), uint64(c.FFN), uint64(c.Vocab), uint64(c.Experts)
	add("token_embd.weight", c.Type, 1, 0, D, V)
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"attn_norm.weight", kernels.F32, 0.1, 1, D)
		add(p+"attn_q.weight", c.Type, s, 0, D, uint64(c.Heads*hd))
		add(p+"attn_k.weight", c.Type, s, 0, D, uint64(c.KVHeads*hd))
		add(p+"attn_v.weight", c.Type, s, 0, D, uint64(c.KVHeads*hd))
		add(p+"attn_output.weight", c.Type, s, 0, uint64(c.Heads*hd), D)
		add(p+"ffn_norm.weight", kernels.F32, 0.1, 1, D)
		switch {
		case c.Experts == 0:
			add(p+"ffn_gate.weight", c.Type, s, 0, D, F)
			add(p+"ffn_up.weight", c.Type, s, 0, D, F)
			add(p+"ffn_down.weight", c.Type, s, 0, F, D)
		case c.LegacyExperts:
			add(p+"ffn_gate_inp.weight", kernels.F32, 4*s, 0, D, E)
			for e := 0; e < c.Experts; e++ {
				add(fmt.Sprintf("%sffn_gate.%d.weight", p, e), c.Type, s, 0, D, F)
				add(fmt.Sprintf("%sffn_down.%d.weight", p, e), c.Type, s, 0, F, D)
				add(fmt.Sprintf("%sffn_up.%d.weight", p, e), c.Type, s, 0, D, F)
			}
		default:
			add(p+"ffn_gate_inp.weight", kernels.F32, 4*s, 0, D, E)
			add(p+"ffn_gate_exps.weight", c.Type, s, 0, D, F, E)
			add(p+"ffn_down_exps.weight", c.Type, s, 0, F, D, E)
			add(p+"ffn_up_exps.weight", c.Type, s, 0, D, F, E)
		}
	}
	add("output_norm.weight", kernels.F32, 0.1, 1, D)
	if !c.TiedOutput {
		add("output.weight", c.Type, s, 0, D, V)
	}

	data := make([][]byte, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			data[i], errs[i] = specs[i].generate(c.Seed, uint64(i))
		}()
	}
	wg.Wait()
	for i, sp := range specs {
		if errs[i] != nil {
			return nil, fmt.Errorf("synth: %s: %w", sp.name, errs[i])
		}
		if err := w.AddTensor(sp.name, sp.typ, sp.dims, data[i]); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Write synthesizes the model and writes it to path.
func Write(c Config, path string) error {
	w, err := Build(c)
	if err != nil {
		return err
	}
	return w.WriteFile(path)
}

type tensorSpec struct {
	name      string
	typ       kernels.DType
	std, mean float64
	dims      []uint64
}

func (t tensorSpec) generate(seed, index uint64) ([]byte, error) {
	n := uint64(1)
	for _, d := range t.dims {
		n *= d
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15^index))
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(t.mean + t.std*rng.NormFloat64())
	}
	size, err := t.typ.RowSize(int(n))
	if err != nil {
		return nil, err
	}
	out := make([]byte, size)
	if err := kernels.Quantize(t.typ, vals, out); err != nil {
		return nil, err
	}
	return out, nil
}

// fileType is general.file_type as llama.cpp numbers it (llama_ftype).
func fileType(t kernels.DType) uint32 {
	switch t {
	case kernels.F16:
		return 1
	case kernels.Q4_0:
		return 2
	case kernels.Q8_0:
		return 7
	}
	return 0 // all F32
}
