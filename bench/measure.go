package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/conclave-ai/conclave/model"
)

// ErrInvalidConfig is wrapped by Config.Validate's errors.
var ErrInvalidConfig = errors.New("bench: invalid config")

// Config is what to measure.
type Config struct {
	Prompts []int // prompt lengths in tokens, one ppN test each
	Gen     int   // tokens decoded in the tgN test; 0 skips it
	Reps    int   // timed repetitions of each test; the mean and stddev are reported
	// Warmup runs a short prefill and one decode before timing, so that the
	// mmapped weights are paged in and buffers are touched. (llama-bench
	// warms up with a whole prompt run; a short one pages in the same
	// weights.)
	Warmup bool
	Vocab  int // token ids used are 1..Vocab-1
}

// DefaultConfig is llama-bench's default tests (pp512, tg128) with two
// repetitions instead of five.
func DefaultConfig() Config {
	return Config{Prompts: []int{512}, Gen: 128, Reps: 2, Warmup: true}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if len(c.Prompts) == 0 && c.Gen == 0 {
		return fmt.Errorf("%w: no prompt lengths and no generation length", ErrInvalidConfig)
	}
	for _, p := range c.Prompts {
		if p < 1 {
			return fmt.Errorf("%w: prompt length %d", ErrInvalidConfig, p)
		}
	}
	switch {
	case c.Gen < 0:
		return fmt.Errorf("%w: generation length %d", ErrInvalidConfig, c.Gen)
	case c.Reps < 1:
		return fmt.Errorf("%w: %d repetitions", ErrInvalidConfig, c.Reps)
	case c.Vocab < 2:
		return fmt.Errorf("%w: vocabulary of %d", ErrInvalidConfig, c.Vocab)
	}
	return nil
}

// Ctx is the number of positions the cache needs for the configuration.
func (c Config) Ctx() int {
	n := c.Gen
	for _, p := range c.Prompts {
		n = max(n, p)
	}
	if c.Warmup {
		n = max(n, warmupTokens+1)
	}
	return n
}

const warmupTokens = 32

// Test is the timing of one ppN or tgN test over its repetitions.
type Test struct {
	Name         string    `json:"name"`         // pp512, tg128 (llama-bench's labels)
	Tokens       int       `json:"tokens"`       // tokens per repetition
	TokensPerSec float64   `json:"tokens_per_s"` // mean over repetitions of tokens/s
	StddevTs     float64   `json:"stddev_tokens_per_s"`
	Samples      []float64 `json:"samples_tokens_per_s"`
}

// Timings are the raw results of Run.
type Timings struct {
	Prefill []Test `json:"prefill"`
	Decode  *Test  `json:"decode,omitempty"`
}

// PromptTokens is the deterministic prompt of n tokens: ids 1, 2, …,
// vocab-1, 1, 2, … (0 is left out; it is often a control token).
func PromptTokens(n, vocab int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(1 + i%(vocab-1))
	}
	return out
}

// Argmax is greedy sampling: the index of the largest logit (the first of ties).
func Argmax(logits []float32) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best)
}

// Run times the tests of cfg on e. Prompt tests each prefill a fresh
// sequence with PromptTokens; the generation test starts a fresh sequence at
// token 1 and decodes cfg.Gen tokens greedily (end-of-generation tokens do
// not stop it), timing every decode step. Each timed repetition starts from
// Reset, which is not timed.
func Run(ctx context.Context, e Engine, cfg Config) (Timings, error) {
	if err := cfg.Validate(); err != nil {
		return Timings{}, err
	}
	var tm Timings
	if cfg.Warmup {
		e.Reset()
		n := warmupTokens
		if len(cfg.Prompts) > 0 {
			n = min(n, cfg.Prompts[0])
		}
		logits, err := e.Prefill(ctx, PromptTokens(n, cfg.Vocab))
		if err != nil {
			return tm, fmt.Errorf("warmup: %w", err)
		}
		if _, err := e.Decode(ctx, Argmax(logits)); err != nil {
			return tm, fmt.Errorf("warmup: %w", err)
		}
	}
	for _, p := range cfg.Prompts {
		tokens := PromptTokens(p, cfg.Vocab)
		t := Test{Name: fmt.Sprintf("pp%d", p), Tokens: p}
		for range cfg.Reps {
			e.Reset()
			t0 := time.Now()
			if _, err := e.Prefill(ctx, tokens); err != nil {
				return tm, fmt.Errorf("%s: %w", t.Name, err)
			}
			t.Samples = append(t.Samples, float64(p)/max(time.Since(t0).Seconds(), 1e-9))
		}
		t.TokensPerSec, t.StddevTs = meanStddev(t.Samples)
		tm.Prefill = append(tm.Prefill, t)
	}
	if cfg.Gen > 0 {
		t := Test{Name: fmt.Sprintf("tg%d", cfg.Gen), Tokens: cfg.Gen}
		for range cfg.Reps {
			e.Reset()
			tok := int32(1)
			t0 := time.Now()
			for range cfg.Gen {
				logits, err := e.Decode(ctx, tok)
				if err != nil {
					return tm, fmt.Errorf("%s: %w", t.Name, err)
				}
				tok = Argmax(logits)
			}
			t.Samples = append(t.Samples, float64(cfg.Gen)/max(time.Since(t0).Seconds(), 1e-9))
		}
		t.TokensPerSec, t.StddevTs = meanStddev(t.Samples)
		tm.Decode = &t
	}
	return tm, nil
}

// meanStddev is the mean and sample standard deviation (0 for one sample),
// as llama-bench reports avg_ts and stddev_ts.
func meanStddev(xs []float64) (mean, stddev float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}

// FLOPCount is what one prefill costs, in floating-point operations, counting
// a multiply-add as two.
type FLOPCount struct {
	// PerToken is 2 × the weights every prompt token meets: attention
	// projections, the router gate, the top-k experts (or the dense FFN).
	PerToken int64 `json:"per_token"`
	// Output is 2 × the output projection, applied to the last token only.
	Output int64 `json:"output"`
	// PerPair is the attention score and weighted-sum cost of one (query
	// token, cached position) pair over all layers and heads:
	// 2 × 2 × layers × heads × head dim.
	PerPair int64 `json:"per_pair"`
}

// Prefill is the cost of a prompt of n tokens into an empty cache: n × PerToken
// + Output + PerPair × n(n+1)/2. Norms, RoPE, softmax and activation
// functions are not counted.
func (f FLOPCount) Prefill(n int) float64 {
	nn := float64(n)
	return nn*float64(f.PerToken) + float64(f.Output) + float64(f.PerPair)*nn*(nn+1)/2
}

// FLOPs counts w's matrix work. Experts are assumed equal in size, so the
// first TopK stand for whichever are routed.
func FLOPs(w *model.Weights) FLOPCount {
	_, active := w.Params()
	out := int64(w.Output.Rows) * int64(w.Output.Cols)
	norms := int64(len(w.OutputNorm))
	for _, l := range w.Blocks {
		norms += int64(len(l.AttnNorm) + len(l.FFNNorm))
	}
	return FLOPCount{
		PerToken: 2 * (active - out - norms),
		Output:   2 * out,
		PerPair:  4 * int64(w.Layers) * int64(w.Heads) * int64(w.HeadDim),
	}
}
