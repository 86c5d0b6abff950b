package engine

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
)

// countingExperts runs experts in process and counts the calls.
type countingExperts struct {
	local model.LocalExperts
	calls atomic.Int64
}

func (c *countingExperts) RunExperts(ctx context.Context, layer int, groups []model.ExpertGroup) error {
	c.calls.Add(1)
	return c.local.RunExperts(ctx, layer, groups)
}

// TestWithExperts: the engine computes routed experts through the runner
// WithExperts gives it.
func TestWithExperts(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	pool := kernels.NewPool(2)
	defer pool.Close()
	x := &countingExperts{local: model.LocalExperts{W: w, Pool: pool}}
	cfg := DefaultConfig()
	cfg.KVBytes = 16 << 20
	e, err := New(cfg, w, pool, nil, WithExperts(x))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ch, err := e.Submit(context.Background(), Request{Prompt: []int32{1, 2, 3}, MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	for ev := range ch {
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
	}
	if x.calls.Load() == 0 {
		t.Fatal("the engine never called the expert runner")
	}
}
