package model

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalidModel is wrapped by errors about a model file that is readable
// but does not describe a model this package can run.
var ErrInvalidModel = errors.New("model: invalid model")

// Config holds a model's hyperparameters as read from GGUF metadata.
type Config struct {
	Arch       string  // general.architecture
	Dim        int     // embedding length
	Layers     int     // transformer blocks
	Heads      int     // attention (query) heads
	KVHeads    int     // key/value heads (GQA when < Heads)
	HeadDim    int     // floats per head
	FFN        int     // hidden size of each expert (or of the dense FFN)
	Experts    int     // experts per layer; 0 for a dense model
	TopK       int     // experts used per token
	Vocab      int     // vocabulary size (rows of token_embd)
	Ctx        int     // trained context length
	RopeBase   float32 // RoPE frequency base
	RopeDim    int     // dimensions rotated by RoPE (≤ HeadDim)
	NormEps    float32 // RMSNorm epsilon
	NormTopKW  bool    // renormalise the top-k gate weights to sum to 1
	TiedOutput bool    // output projection shares token_embd

	// vocabDeclared: the file gave the vocabulary size, which the
	// embedding's rows must then match.
	vocabDeclared bool
}

// Validate checks that the hyperparameters are consistent.
func (c Config) Validate() error {
	switch {
	case c.Dim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FFN <= 0 || c.Vocab <= 0:
		return fmt.Errorf("%w: dim, layers, heads, kv heads, ffn and vocab must be positive: %+v", ErrInvalidModel, c)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%w: %d heads is not a multiple of %d kv heads", ErrInvalidModel, c.Heads, c.KVHeads)
	case c.HeadDim <= 0 || c.HeadDim%2 != 0:
		return fmt.Errorf("%w: head dim %d must be positive and even", ErrInvalidModel, c.HeadDim)
	case c.RopeDim <= 0 || c.RopeDim > c.HeadDim || c.RopeDim%2 != 0:
		return fmt.Errorf("%w: rope dimension %d must be even and within head dim %d", ErrInvalidModel, c.RopeDim, c.HeadDim)
	case c.Experts < 0 || c.TopK < 0 || (c.Experts > 0 && (c.TopK == 0 || c.TopK > c.Experts)) || (c.Experts == 0 && c.TopK != 0):
		// A dense model uses no experts (llama.cpp refuses the same).
		return fmt.Errorf("%w: %d experts with top-%d", ErrInvalidModel, c.Experts, c.TopK)
	case c.Ctx <= 0 || c.Ctx > maxHyper:
		return fmt.Errorf("%w: context length %d (at most %d)", ErrInvalidModel, c.Ctx, maxHyper)
	case c.Dim > maxHyper || c.Layers > maxLayers || c.Heads > maxHyper || c.KVHeads > maxHyper || c.HeadDim > maxHyper ||
		c.FFN > maxHyper || c.Vocab > maxHyper || c.Experts > maxExperts:
		// Bounds far above any real model's, so that no product of two of
		// them (a weight's elements, a buffer's length) overflows, and a
		// lying header cannot ask for an absurd allocation before any
		// tensor is checked.
		return fmt.Errorf("%w: a hyperparameter out of range (dim %d, layers %d, heads %d/%d, head dim %d, ffn %d, vocab %d, experts %d)",
			ErrInvalidModel, c.Dim, c.Layers, c.Heads, c.KVHeads, c.HeadDim, c.FFN, c.Vocab, c.Experts)
	case c.Heads*c.HeadDim > maxHyper:
		return fmt.Errorf("%w: %d heads of %d: query width out of range", ErrInvalidModel, c.Heads, c.HeadDim)
	case attnScratchLen(c, c.Ctx) > maxAttnScratch:
		// Attention keeps its query vectors' scores and staging for a
		// whole context per thread; a 1M-token context needs ~2^24 floats.
		return fmt.Errorf("%w: context length %d with %d query heads per kv head: attention scratch out of range", ErrInvalidModel, c.Ctx, c.Heads/c.KVHeads)
	case !(c.NormEps > 0) || math.IsInf(float64(c.NormEps), 0):
		return fmt.Errorf("%w: rms norm epsilon %v", ErrInvalidModel, c.NormEps)
	case !(c.RopeBase > 0) || math.IsInf(float64(c.RopeBase), 0):
		return fmt.Errorf("%w: rope base (rope.freq_base) %v", ErrInvalidModel, c.RopeBase)
	}
	return nil
}

// Bounds on hyperparameters (see Validate).
const (
	maxHyper   = 1 << 24 // dims, heads, vocabulary, context
	maxLayers  = 1 << 12
	maxExperts = 1 << 12
	// maxAttnScratch bounds the floats of one thread's attention scratch
	// (attnScratchLen) for the model's whole context: 512 MiB.
	maxAttnScratch = 1 << 27
)

// MoE reports whether the model routes tokens to experts.
func (c Config) MoE() bool { return c.Experts > 0 }

// QDim is the width of the concatenated query heads.
func (c Config) QDim() int { return c.Heads * c.HeadDim }

// KVDim is the width of the concatenated key (or value) heads.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim }
