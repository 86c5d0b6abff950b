package bench

import (
	"context"

	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/kvcache"
)

// Engine runs one sequence, the unit both prompt processing and generation
// are measured on. Calls come from one goroutine and block until the
// computation is done; returned logits are owned by the engine and valid
// until the next call.
type Engine interface {
	// Reset empties the sequence, as a fresh cache would be, without
	// allocating.
	Reset()
	// Prefill appends tokens to the sequence and returns the logits of the
	// last one (Vocab floats).
	Prefill(ctx context.Context, tokens []int32) ([]float32, error)
	// Decode appends one token and returns its logits.
	Decode(ctx context.Context, token int32) ([]float32, error)
}

// RunnerEngine is the in-process Engine: a model.Runner over one cache.
type RunnerEngine struct {
	R     *model.Runner
	Cache *kvcache.Cache
	batch model.Batch
}

// NewRunnerEngine measures r on cache c.
func NewRunnerEngine(r *model.Runner, c *kvcache.Cache) *RunnerEngine {
	return &RunnerEngine{R: r, Cache: c, batch: model.Batch{
		Tokens: make([]int32, 1), Pos: make([]int32, 1), Seqs: []*kvcache.Cache{c},
	}}
}

// Reset truncates the cache to empty.
func (e *RunnerEngine) Reset() { e.Cache.Truncate(0) }

// Prefill runs tokens in chunks of up to the runner's MaxRows.
func (e *RunnerEngine) Prefill(ctx context.Context, tokens []int32) ([]float32, error) {
	return e.R.Prefill(ctx, e.Cache, tokens, e.Cache.Len(), false, nil)
}

// Decode runs one token at the next position.
func (e *RunnerEngine) Decode(ctx context.Context, token int32) ([]float32, error) {
	e.batch.Tokens[0], e.batch.Pos[0] = token, int32(e.Cache.Len())
	return e.R.Forward(ctx, &e.batch, nil)
}
