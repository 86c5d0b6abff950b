package model

import (
	"errors"
	"fmt"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/gguf"
)

// The llama architecture covers dense Llama models and Mixtral-style MoE
// models, which GGUF stores as "llama" with llama.expert_count set.
func init() {
	Register("llama", loadLlama)
}

func loadLlama(f *gguf.File) (*Weights, error) {
	cfg, err := llamaConfig(f, "llama")
	if err != nil {
		return nil, err
	}
	b := binder{f: f}
	w := &Weights{Config: cfg}
	w.TokEmbd = b.matrix("token_embd.weight", cfg.Dim, -1)
	if b.err != nil {
		return nil, b.err
	}
	switch rows := w.TokEmbd.Rows; {
	case rows < 1 || rows > maxHyper:
		return nil, fmt.Errorf("%w: %s: token_embd.weight has %d rows (the vocabulary)", ErrInvalidModel, f.Path, rows)
	case cfg.vocabDeclared && cfg.Vocab != rows:
		return nil, fmt.Errorf("%w: %s: %s.vocab_size is %d but token_embd.weight has %d rows", ErrInvalidModel, f.Path, cfg.Arch, cfg.Vocab, rows)
	default:
		w.Vocab = rows
	}
	w.OutputNorm = b.vector("output_norm.weight", cfg.Dim)
	if _, _, err := f.Tensor("output.weight"); errors.Is(err, gguf.ErrMissingTensor) {
		w.Output = w.TokEmbd
		w.TiedOutput = true
	} else {
		w.Output = b.matrix("output.weight", cfg.Dim, w.Vocab)
	}
	w.Blocks = make([]Layer, cfg.Layers)
	for i := range w.Blocks {
		l := &w.Blocks[i]
		p := fmt.Sprintf("blk.%d.", i)
		l.AttnNorm = b.vector(p+"attn_norm.weight", cfg.Dim)
		l.Wq = b.matrix(p+"attn_q.weight", cfg.Dim, cfg.QDim())
		l.Wk = b.matrix(p+"attn_k.weight", cfg.Dim, cfg.KVDim())
		l.Wv = b.matrix(p+"attn_v.weight", cfg.Dim, cfg.KVDim())
		l.Wo = b.matrix(p+"attn_output.weight", cfg.QDim(), cfg.Dim)
		l.FFNNorm = b.vector(p+"ffn_norm.weight", cfg.Dim)
		if !cfg.MoE() {
			l.Dense = &Expert{
				Gate: b.matrix(p+"ffn_gate.weight", cfg.Dim, cfg.FFN),
				Up:   b.matrix(p+"ffn_up.weight", cfg.Dim, cfg.FFN),
				Down: b.matrix(p+"ffn_down.weight", cfg.FFN, cfg.Dim),
			}
			continue
		}
		l.GateInp = b.matrix(p+"ffn_gate_inp.weight", cfg.Dim, cfg.Experts)
		if b.has(p + "ffn_gate_exps.weight") {
			gate := b.stacked(p+"ffn_gate_exps.weight", cfg.Dim, cfg.FFN, cfg.Experts)
			up := b.stacked(p+"ffn_up_exps.weight", cfg.Dim, cfg.FFN, cfg.Experts)
			down := b.stacked(p+"ffn_down_exps.weight", cfg.FFN, cfg.Dim, cfg.Experts)
			if b.err != nil {
				return nil, b.err
			}
			l.Experts = make([]Expert, cfg.Experts)
			for e := range l.Experts {
				l.Experts[e] = Expert{Gate: gate[e], Up: up[e], Down: down[e]}
			}
			continue
		}
		// The older form: one tensor per expert.
		if b.err != nil {
			return nil, b.err
		}
		l.Experts = make([]Expert, cfg.Experts)
		for e := range l.Experts {
			l.Experts[e] = Expert{
				Gate: b.matrix(fmt.Sprintf("%sffn_gate.%d.weight", p, e), cfg.Dim, cfg.FFN),
				Up:   b.matrix(fmt.Sprintf("%sffn_up.%d.weight", p, e), cfg.Dim, cfg.FFN),
				Down: b.matrix(fmt.Sprintf("%sffn_down.%d.weight", p, e), cfg.FFN, cfg.Dim),
			}
		}
	}
	if b.err != nil {
		return nil, b.err
	}
	return w, nil
}

// llamaConfig reads the hyperparameters stored under the arch prefix.
func llamaConfig(f *gguf.File, arch string) (Config, error) {
	c := Config{Arch: arch, NormTopKW: true}
	var errs []error
	geti := func(key string) int {
		v, err := f.Uint(arch + "." + key)
		if err != nil {
			errs = append(errs, err)
		}
		return int(v)
	}
	optInt := func(key string, def int) int {
		v, err := f.UintOr(arch+"."+key, uint64(def))
		if err != nil {
			errs = append(errs, err)
		}
		return int(v)
	}
	optFloat := func(key string, def float64) float32 {
		v, err := f.FloatOr(arch+"."+key, def)
		if err != nil {
			errs = append(errs, err)
		}
		return float32(v)
	}
	c.Dim = geti("embedding_length")
	c.Layers = geti("block_count")
	c.Heads = geti("attention.head_count")
	c.FFN = geti("feed_forward_length")
	c.Ctx = optInt("context_length", 4096)
	c.KVHeads = optInt("attention.head_count_kv", c.Heads)
	c.Experts = optInt("expert_count", 0)
	c.TopK = optInt("expert_used_count", 0)
	c.Vocab = optInt("vocab_size", 0)
	c.NormEps = optFloat("attention.layer_norm_rms_epsilon", 1e-5)
	c.RopeBase = optFloat("rope.freq_base", 10000)
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	if c.Heads > 0 {
		c.HeadDim = optInt("attention.key_length", c.Dim/c.Heads)
		if v := optInt("attention.value_length", c.HeadDim); v != c.HeadDim {
			errs = append(errs, fmt.Errorf("%w: %s: key length %d != value length %d", ErrInvalidModel, f.Path, c.HeadDim, v))
		}
	}
	c.RopeDim = optInt("rope.dimension_count", c.HeadDim)
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	c.vocabDeclared = c.Vocab != 0
	if c.Vocab == 0 {
		c.Vocab = 1 // replaced by token_embd's row count
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", f.Path, err)
	}
	return c, nil
}

// binder looks up tensors and checks their shapes, keeping the first error.
type binder struct {
	f   *gguf.File
	err error
}

func (b *binder) has(name string) bool {
	_, _, err := b.f.Tensor(name)
	return err == nil
}

func (b *binder) fail(name string, format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf("%w: %s: tensor %s: %s", ErrInvalidModel, b.f.Path, name, fmt.Sprintf(format, args...))
	}
}

func (b *binder) lookup(name string) (gguf.TensorInfo, []byte, bool) {
	if b.err != nil {
		return gguf.TensorInfo{}, nil, false
	}
	ti, data, err := b.f.Tensor(name)
	if err != nil {
		b.err = err
		return ti, nil, false
	}
	return ti, data, true
}

// matrix binds a 2-D tensor of shape [cols, rows] (GGUF order); rows < 0
// accepts any row count.
func (b *binder) matrix(name string, cols, rows int) kernels.Matrix {
	ti, data, ok := b.lookup(name)
	if !ok {
		return kernels.Matrix{}
	}
	if len(ti.Dims) != 2 || int(ti.Dims[0]) != cols || (rows >= 0 && int(ti.Dims[1]) != rows) {
		b.fail(name, "shape %v, want [%d %d]", ti.Dims, cols, rows)
		return kernels.Matrix{}
	}
	if !b.computable(name, ti.Type) {
		return kernels.Matrix{}
	}
	return withTiles(kernels.Matrix{Type: ti.Type, Rows: int(ti.Dims[1]), Cols: cols, Data: data})
}

// computable reports whether the kernels have a dot product for a weight of
// type t (else it fails the binding: a type the reader knows but no kernel
// multiplies, such as Q4_1, would load and then fail the first token).
func (b *binder) computable(name string, t kernels.DType) bool {
	if !t.HasVecDot() {
		b.fail(name, "type %v: no kernel multiplies it (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)", t)
		return false
	}
	return true
}

// withTiles gives m a holder for packed tiles where MatMul would use them
// (Weights.KeepResident fills it for the weights a node computes with).
func withTiles(m kernels.Matrix) kernels.Matrix {
	if kernels.TilesUseful(m) {
		m.Tiles = new(kernels.Tiles)
	}
	return m
}

// vector binds a 1-D F32 tensor of n elements.
func (b *binder) vector(name string, n int) []float32 {
	ti, data, ok := b.lookup(name)
	if !ok {
		return nil
	}
	if len(ti.Dims) != 1 || int(ti.Dims[0]) != n {
		b.fail(name, "shape %v, want [%d]", ti.Dims, n)
		return nil
	}
	out := make([]float32, n)
	if err := kernels.Dequantize(ti.Type, data, out); err != nil {
		b.fail(name, "%v", err)
		return nil
	}
	return out
}

// stacked binds a 3-D tensor [cols, rows, n] as n matrices.
func (b *binder) stacked(name string, cols, rows, n int) []kernels.Matrix {
	ti, data, ok := b.lookup(name)
	if !ok {
		return nil
	}
	if len(ti.Dims) != 3 || int(ti.Dims[0]) != cols || int(ti.Dims[1]) != rows || int(ti.Dims[2]) != n {
		b.fail(name, "shape %v, want [%d %d %d]", ti.Dims, cols, rows, n)
		return nil
	}
	if !b.computable(name, ti.Type) {
		return nil
	}
	per := len(data) / n
	ms := make([]kernels.Matrix, n)
	for e := range ms {
		ms[e] = withTiles(kernels.Matrix{Type: ti.Type, Rows: rows, Cols: cols, Data: data[e*per : (e+1)*per]})
	}
	return ms
}
