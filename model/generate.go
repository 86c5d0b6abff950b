package model

import (
	"context"
	"fmt"
	"time"

	"github.com/conclave-ai/conclave/model/kvcache"
)

// Sampler picks the next token from a row of logits; history is the
// sequence so far. model/sample.Sampler implements it.
type Sampler interface {
	Sample(logits []float32, history []int32) int32
}

// Timings reports where a generation spent its time.
type Timings struct {
	PromptTokens    int           `json:"prompt_tokens"`
	GeneratedTokens int           `json:"generated_tokens"`
	Prefill         time.Duration `json:"prefill_ns"`
	Decode          time.Duration `json:"decode_ns"`
}

// PrefillTokensPerSec is the prompt processing rate.
func (t Timings) PrefillTokensPerSec() float64 {
	return float64(t.PromptTokens) / max(t.Prefill.Seconds(), 1e-9)
}

// DecodeTokensPerSec is the generation rate after the first token.
func (t Timings) DecodeTokensPerSec() float64 {
	return float64(max(t.GeneratedTokens-1, 0)) / max(t.Decode.Seconds(), 1e-9)
}

// Prefill runs tokens through one sequence starting at position start, in
// chunks of at most MaxRows. With all set it returns the logits of every
// token (len(tokens) × Vocab, newly allocated); otherwise those of the last
// token (owned by the runner, valid until the next call).
func (r *Runner) Prefill(ctx context.Context, c *kvcache.Cache, tokens []int32, start int, all bool, experts ExpertRunner) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: no tokens", ErrBadBatch)
	}
	var out []float32
	if all {
		out = make([]float32, 0, len(tokens)*r.W.Vocab)
	}
	b := Batch{
		Pos:  make([]int32, 0, r.MaxRows),
		Seqs: make([]*kvcache.Cache, 0, r.MaxRows),
	}
	flags := make([]bool, r.MaxRows)
	for i := range flags {
		flags[i] = true
	}
	var last []float32
	for off := 0; off < len(tokens); off += r.MaxRows {
		chunk := tokens[off:min(off+r.MaxRows, len(tokens))]
		b.Tokens = chunk
		b.Pos, b.Seqs = b.Pos[:0], b.Seqs[:0]
		for i := range chunk {
			b.Pos = append(b.Pos, int32(start+off+i))
			b.Seqs = append(b.Seqs, c)
		}
		b.Logits = nil
		if all {
			b.Logits = flags[:len(chunk)]
		}
		logits, err := r.Forward(ctx, &b, experts)
		if err != nil {
			return nil, err
		}
		if all {
			out = append(out, logits...)
		}
		last = logits
	}
	if all {
		return out, nil
	}
	return last, nil
}

// Generate prefills prompt into a fresh sequence and decodes up to maxTokens
// tokens, stopping after a token for which stop returns true (that token is
// included). maxTokens is clamped so prompt and output fit the cache's
// context. onToken, if set, sees each token as it is produced. s sees the
// prompt and the tokens so far as its history: a sample.Sampler should be
// told the prompt's length (Config.PromptLen), as the engine tells its own,
// so presence and frequency penalties count only generated tokens.
func (r *Runner) Generate(ctx context.Context, c *kvcache.Cache, prompt []int32, maxTokens int, s Sampler, stop func(int32) bool, onToken func(int32), experts ExpertRunner) ([]int32, Timings, error) {
	tm := Timings{PromptTokens: len(prompt)}
	if len(prompt)+maxTokens > c.Config().Ctx {
		maxTokens = c.Config().Ctx - len(prompt)
	}
	if maxTokens <= 0 {
		return nil, tm, fmt.Errorf("%w: prompt of %d tokens leaves no room in a context of %d", kvcache.ErrFull, len(prompt), c.Config().Ctx)
	}
	t0 := time.Now()
	logits, err := r.Prefill(ctx, c, prompt, 0, false, experts)
	if err != nil {
		return nil, tm, err
	}
	tm.Prefill = time.Since(t0)
	history := make([]int32, 0, len(prompt)+maxTokens)
	history = append(history, prompt...)
	out := make([]int32, 0, maxTokens)
	b := Batch{Tokens: make([]int32, 1), Pos: make([]int32, 1), Seqs: []*kvcache.Cache{c}}
	t1 := time.Now()
	for {
		tok := s.Sample(logits, history)
		if len(out) == 0 {
			t1 = time.Now() // decode rate is measured after the first token
		}
		out = append(out, tok)
		history = append(history, tok)
		if onToken != nil {
			onToken(tok)
		}
		if len(out) >= maxTokens || (stop != nil && stop(tok)) {
			break
		}
		b.Tokens[0], b.Pos[0] = tok, int32(len(history)-1)
		if logits, err = r.Forward(ctx, &b, experts); err != nil {
			return out, tm, err
		}
	}
	tm.Decode = time.Since(t1)
	tm.GeneratedTokens = len(out)
	return out, tm, nil
}
