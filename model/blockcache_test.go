package model

import (
	"context"
	"fmt"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/synth"
)

// TestBlockCacheBitIdentical checks that attention over a block cache gives
// the same logits, bit for bit, as over one contiguous block (the cache
// before blocks existed): the kernels run per block segment in position
// order. Block sizes that do and do not divide the sequence, row-major and
// head-major blocks, GQA groups of 2 (staged scores) and 1 (scores in
// place).
func TestBlockCacheBitIdentical(t *testing.T) {
	ctx := context.Background()
	models := invarianceModels(t)
	models = append(models, struct {
		name  string
		cfg   synth.Config
		cache kernels.DType
	}{"f32-moe-no-gqa-f16-cache", tinyConfig(t, func(c *synth.Config) { c.KVHeads = c.Heads }), kernels.F16})
	for _, m := range models {
		t.Run(m.name, func(t *testing.T) {
			w, _ := testModel(t, m.cfg)
			tokens := testTokens(45, w.Vocab, 21)
			want := prefillAll(t, w, 2, 64, m.cache, tokens) // one block of w.Ctx positions
			pool := kernels.NewPool(2)
			defer pool.Close()
			for _, lay := range []struct{ bs, hd int }{{1, 0}, {5, 0}, {16, 0}, {32, 0}, {1, w.HeadDim}, {5, w.HeadDim}, {16, w.HeadDim}} {
				bs := lay.bs
				name := fmt.Sprintf("block-%d", bs)
				if lay.hd > 0 {
					name += "-head-major" // each head's positions together
				}
				t.Run(name, func(t *testing.T) {
					r := NewRunner(w, pool, 64)
					c, err := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: w.Ctx, KVDim: w.KVDim(), Type: m.cache, BlockSize: bs, HeadDim: lay.hd})
					if err != nil {
						t.Fatal(err)
					}
					got, err := r.Prefill(ctx, c, tokens, 0, true, nil)
					if err != nil {
						t.Fatal(err)
					}
					sameBits(t, "prefill", got, want)
					if want := (len(tokens) + bs - 1) / bs; c.Blocks() != want {
						t.Errorf("%d blocks for %d positions, want %d", c.Blocks(), len(tokens), want)
					}
					// One row at a time from position 30.
					c.Truncate(30)
					for i := 30; i < len(tokens); i++ {
						b := Batch{Tokens: tokens[i : i+1], Pos: []int32{int32(i)}, Seqs: []*kvcache.Cache{c}}
						logits, err := r.Forward(ctx, &b, nil)
						if err != nil {
							t.Fatal(err)
						}
						sameBits(t, fmt.Sprintf("decode at %d", i), logits, want[i*w.Vocab:(i+1)*w.Vocab])
					}
				})
			}
		})
	}
}

// TestSharedPoolPrefix runs two sequences on one shared pool: the second
// attaches the first's committed blocks and computes only the rest, with the
// logits of a fresh computation.
func TestSharedPoolPrefix(t *testing.T) {
	ctx := context.Background()
	w, _ := testModel(t, tinyConfig(t, func(c *synth.Config) { c.Type = kernels.Q8_0 }))
	const bs = 16
	pool := kernels.NewPool(2)
	defer pool.Close()
	r := NewRunner(w, pool, 64)
	kv, err := kvcache.NewPool(kvcache.PoolConfig{Layers: w.Layers, KVDim: w.KVDim(), Type: kernels.F16, BlockSize: bs, Blocks: 8})
	if err != nil {
		t.Fatal(err)
	}
	a := testTokens(40, w.Vocab, 22)
	b := append(append([]int32{}, a[:35]...), testTokens(10, w.Vocab, 23)...)
	want := prefillAll(t, w, 2, 64, kernels.F16, b)

	sa := kv.NewSequence(w.Ctx)
	if _, err := r.Prefill(ctx, sa, a, 0, false, nil); err != nil {
		t.Fatal(err)
	}
	sa.Commit(a)
	sb := kv.NewSequence(w.Ctx)
	hit := sb.AttachPrefix(b[:len(b)-1])
	if hit != 32 {
		t.Fatalf("attached %d positions, want 32 (two full shared blocks)", hit)
	}
	if kv.Used() != 3+0 { // a: 3 blocks (two shared with b)
		t.Errorf("%d blocks used, want 3", kv.Used())
	}
	got, err := r.Prefill(ctx, sb, b[hit:], hit, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameBits(t, "after a shared prefix", got, want[hit*w.Vocab:])
	// a's blocks were not written by b.
	sa2 := kv.NewSequence(w.Ctx)
	if n := sa2.AttachPrefix(a); n != 32 {
		t.Errorf("a's prefix now matches %d positions, want 32", n)
	}
	sa.Release()
	sb.Release()
	sa2.Release()
	if kv.Used() != 0 {
		t.Errorf("%d blocks used after releasing every sequence", kv.Used())
	}
}
