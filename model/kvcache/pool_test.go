package kvcache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"unsafe"

	"github.com/conclave-ai/conclave/kernels"
)

func newTestPool(t *testing.T, blocks int) *Pool {
	t.Helper()
	p, err := NewPool(PoolConfig{Layers: 2, KVDim: 3, Type: kernels.F32, BlockSize: 4, Blocks: blocks})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fill writes positions [c.Len(), len(tokens)) with rows derived from the
// token ids, as a forward pass would.
func fill(t *testing.T, c *Cache, tokens []int32) {
	t.Helper()
	for pos := c.Len(); pos < len(tokens); pos++ {
		if err := c.Reserve(pos); err != nil {
			t.Fatal(err)
		}
		for l := range 2 {
			x := float32(tokens[pos]*10 + int32(l))
			c.Store(l, pos, []float32{x, x + 1, float32(pos)}, []float32{-x, x, 0})
		}
	}
}

// checkRows verifies the rows fill wrote for tokens.
func checkRows(t *testing.T, c *Cache, tokens []int32) {
	t.Helper()
	for pos := range tokens {
		for l := range 2 {
			k := c.K32(l, pos/4)[(pos%4)*3:][:3]
			x := float32(tokens[pos]*10 + int32(l))
			if k[0] != x || k[1] != x+1 || k[2] != float32(pos) {
				t.Fatalf("layer %d position %d: key %v, want %v", l, pos, k, []float32{x, x + 1, float32(pos)})
			}
		}
	}
}

func seqTokens(n int, base int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = base + int32(i)
	}
	return out
}

func TestPoolConfigValidate(t *testing.T) {
	ok := PoolConfig{Layers: 1, KVDim: 2, Type: kernels.F16, BlockSize: 16, Blocks: 4}
	for _, tc := range []struct {
		name   string
		mutate func(*PoolConfig)
		valid  bool
	}{
		{"ok", func(*PoolConfig) {}, true},
		{"zero blocks", func(c *PoolConfig) { c.Blocks = 0 }, false},
		{"zero block size", func(c *PoolConfig) { c.BlockSize = 0 }, false},
		{"q8_0", func(c *PoolConfig) { c.Type = kernels.Q8_0 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			if _, err := NewPool(c); (err == nil) != tc.valid || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Fatalf("NewPool(%+v) = %v, want valid %v", c, err, tc.valid)
			}
		})
	}
	if got, want := ok.BlockBytes(), int64(2*1*16*2*2); got != want {
		t.Errorf("BlockBytes %d, want %d", got, want)
	}
}

func TestPrefixCache(t *testing.T) {
	p := newTestPool(t, 8)
	a := seqTokens(10, 100) // blocks [0,4) [4,8) and a partial one
	sa := p.NewSequence(64)
	if n := sa.AttachPrefix(a); n != 0 {
		t.Fatalf("empty cache matched %d positions", n)
	}
	fill(t, sa, a)
	sa.Commit(a)
	if sa.Blocks() != 3 || p.Used() != 3 {
		t.Fatalf("%d blocks in table, %d used; want 3, 3", sa.Blocks(), p.Used())
	}

	t.Run("shared while referenced", func(t *testing.T) {
		b := append(slices.Clone(a[:9]), 7, 7, 7)
		sb := p.NewSequence(64)
		if n := sb.AttachPrefix(b); n != 8 {
			t.Fatalf("matched %d positions, want 8", n)
		}
		if p.Used() != 3 {
			t.Errorf("%d blocks used, want 3 (two shared)", p.Used())
		}
		fill(t, sb, b)
		checkRows(t, sb, b)
		checkRows(t, sa, a) // a's partial block is private: b's writes went elsewhere
		sb.Release()
	})
	t.Run("different first block misses", func(t *testing.T) {
		b := slices.Clone(a)
		b[0]++
		sb := p.NewSequence(64)
		if n := sb.AttachPrefix(b); n != 0 {
			t.Errorf("matched %d positions after changing token 0", n)
		}
	})
	t.Run("same block after a different prefix misses", func(t *testing.T) {
		b := slices.Clone(a)
		b[1]++ // block 0 differs, block 1 equal
		sb := p.NewSequence(64)
		if n := sb.AttachPrefix(b); n != 0 {
			t.Errorf("matched %d positions", n)
		}
	})
	t.Run("context caps the match", func(t *testing.T) {
		sb := p.NewSequence(5)
		if n := sb.AttachPrefix(a); n != 4 {
			t.Errorf("matched %d positions with a context of 5, want 4", n)
		}
		sb.Release()
	})

	sa.Release()
	if p.Used() != 0 || p.Cached() != 2 || p.Free() != 6 {
		t.Fatalf("after release: used %d cached %d free %d; want 0, 2, 6", p.Used(), p.Cached(), p.Free())
	}
	// The released blocks still serve a later sequence (a session's next turn).
	next := append(slices.Clone(a), 1, 2, 3, 4, 5, 6)
	sc := p.NewSequence(64)
	if n := sc.AttachPrefix(next); n != 8 {
		t.Fatalf("matched %d positions after release, want 8", n)
	}
	checkRows(t, sc, a[:8])
	if p.Cached() != 0 || p.Used() != 2 {
		t.Errorf("cached %d used %d, want 0, 2", p.Cached(), p.Used())
	}
	sc.Release()
}

func TestEvictionLRU(t *testing.T) {
	p := newTestPool(t, 4)
	run := func(tokens []int32) *Cache {
		c := p.NewSequence(64)
		c.AttachPrefix(tokens)
		fill(t, c, tokens)
		c.Commit(tokens)
		return c
	}
	a, b := seqTokens(8, 0), seqTokens(8, 50)
	ca := run(a)
	ca.Release()
	cb := run(b)
	cb.Release()
	if p.Cached() != 4 || p.Free() != 0 {
		t.Fatalf("cached %d free %d, want 4, 0", p.Cached(), p.Free())
	}
	// A new sequence needing 2 blocks evicts a's (released first), last
	// block first.
	c := run(seqTokens(8, 200))
	if p.Evictions() != 2 {
		t.Errorf("%d evictions, want 2", p.Evictions())
	}
	probe := p.NewSequence(64)
	if n := probe.AttachPrefix(a); n != 0 {
		t.Errorf("a still matches %d positions after eviction", n)
	}
	if n := probe.AttachPrefix(b); n != 8 {
		t.Errorf("b matches %d positions, want 8", n)
	}
	checkRows(t, probe, b)
	// Everything is referenced now: allocation fails with ErrFull, no panic.
	d := p.NewSequence(64)
	if err := d.Reserve(0); !errors.Is(err, ErrFull) {
		t.Errorf("Reserve with every block referenced = %v, want ErrFull", err)
	}
	if err := d.Grow(100); !errors.Is(err, ErrFull) {
		t.Errorf("Grow past the context = %v, want ErrFull", err)
	}
	c.Release()
	probe.Release()
	if err := d.Grow(8); err != nil {
		t.Errorf("Grow after releases: %v", err)
	}
	d.Release()
	if p.Used() != 0 {
		t.Errorf("%d blocks used at the end", p.Used())
	}
}

// TestCopyOnWrite rewrites a position inside a shared, cached block: the
// writer gets a private copy and the cached block keeps its contents.
func TestCopyOnWrite(t *testing.T) {
	p := newTestPool(t, 6)
	a := seqTokens(8, 10)
	sa := p.NewSequence(64)
	fill(t, sa, a)
	sa.Commit(a)
	sb := p.NewSequence(64)
	if n := sb.AttachPrefix(a); n != 8 {
		t.Fatalf("matched %d", n)
	}
	// b rewinds to position 6 and writes a different token there.
	sb.Truncate(6)
	edited := append(slices.Clone(a[:6]), 99)
	fill(t, sb, edited)
	checkRows(t, sb, edited)
	checkRows(t, sa, a)
	sa.Release()
	// The cached prefix is intact.
	sc := p.NewSequence(64)
	if n := sc.AttachPrefix(a); n != 8 {
		t.Errorf("matched %d after b's rewrite, want 8", n)
	}
	checkRows(t, sc, a)
	// A block referenced only once but registered is unregistered on write.
	sb.Release()
	sc.Truncate(2)
	fill(t, sc, []int32{10, 11, 5})
	probe := p.NewSequence(64)
	if n := probe.AttachPrefix(a); n != 0 {
		t.Errorf("matched %d after an in-place rewrite of block 0, want 0", n)
	}
}

// TestTruncateIntoCommittedBlock: a sequence whose first block is committed
// but private (the same prefix was cached already) rewinds into it and goes
// on with other tokens. Its later blocks must be registered under the new
// history, not under the chain of the tokens it rewound over.
func TestTruncateIntoCommittedBlock(t *testing.T) {
	p := newTestPool(t, 16)
	a := []int32{1, 2, 3, 4}
	sa := p.NewSequence(64)
	fill(t, sa, a)
	sa.Commit(a) // block 0 registered by sa
	sb := p.NewSequence(64)
	fill(t, sb, a)
	sb.Commit(a) // found cached: sb's block 0 stays private, committed
	b := []int32{1, 2, 9, 9, 5, 6, 7, 8}
	sb.Truncate(2)
	fill(t, sb, b)
	sb.Commit(b)
	probe := p.NewSequence(64)
	if n := probe.AttachPrefix([]int32{1, 2, 3, 4, 5, 6, 7, 8}); n != 4 {
		t.Errorf("matched %d positions of 1…8, want 4: block 1 was computed after 1 2 9 9", n)
	}
	probe.Release()
	if n := probe.AttachPrefix(b); n != 8 {
		t.Errorf("matched %d positions of sb's own history, want 8", n)
	}
}

// TestHashCollision: a block whose key collides with a registered block of
// another prefix is not registered, nor is any block after it, so a
// lookup through the other prefix never reaches keys and values computed
// after this one.
func TestHashCollision(t *testing.T) {
	p := newTestPool(t, 16)
	x, y := []int32{1, 2, 3, 4}, []int32{9, 9, 9, 9}
	kx := p.blockKey(0, x)
	p.collide = func(parent uint64, tokens []int32) (uint64, bool) {
		return kx, parent == 0 && slices.Equal(tokens, y) // y's key is x's
	}
	sa := p.NewSequence(64)
	fill(t, sa, x)
	sa.Commit(x)
	after := []int32{5, 6, 7, 8}
	b := append(slices.Clone(y), after...)
	sb := p.NewSequence(64)
	fill(t, sb, b)
	sb.Commit(b)
	probe := p.NewSequence(64)
	if n := probe.AttachPrefix(append(slices.Clone(x), after...)); n != 4 {
		t.Errorf("matched %d positions of 1 2 3 4 5 6 7 8, want 4: block 1 was computed after 9 9 9 9", n)
	}
	probe.Release()
	if n := probe.AttachPrefix(b); n != 0 {
		t.Errorf("matched %d positions of the colliding prefix, want 0", n)
	}
}

// TestInvalidate: after Invalidate no earlier block matches, cached blocks
// are freed, and a sequence begun before the call never registers its
// blocks (they hold keys and values of the old weights).
func TestInvalidate(t *testing.T) {
	p := newTestPool(t, 8)
	a := seqTokens(8, 100)
	sa := p.NewSequence(64)
	fill(t, sa, a)
	sa.Commit(a)
	sa.Release()
	b := seqTokens(8, 300)
	sb := p.NewSequence(64) // running across the invalidation
	fill(t, sb, b[:4])
	if p.Cached() != 2 {
		t.Fatalf("cached %d, want 2", p.Cached())
	}

	p.Invalidate()
	if p.Cached() != 0 || p.Free() != 7 {
		t.Fatalf("after Invalidate: cached %d free %d, want 0, 7", p.Cached(), p.Free())
	}
	sc := p.NewSequence(64)
	if n := sc.AttachPrefix(a); n != 0 {
		t.Fatalf("matched %d positions of an invalidated prefix", n)
	}
	fill(t, sb, b)
	sb.Commit(b)
	sb.Release()
	if n := sc.AttachPrefix(b); n != 0 {
		t.Fatalf("matched %d positions a pre-invalidation sequence computed", n)
	}
	// New sequences cache again.
	fill(t, sc, a)
	sc.Commit(a)
	sc.Release()
	sd := p.NewSequence(64)
	if n := sd.AttachPrefix(a); n != 8 {
		t.Fatalf("matched %d positions after recomputing, want 8", n)
	}
	checkRows(t, sd, a)
	sd.Release()
}

// TestPrefault: Prefault writes to every 4 KiB page of the free blocks'
// memory in every layer's keys and values, and leaves the blocks a sequence
// holds or the prefix cache keeps as they were.
func TestPrefault(t *testing.T) {
	for _, typ := range []kernels.DType{kernels.F16, kernels.F32} {
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%v/threads-%d", typ, threads), func(t *testing.T) {
				// A block is 16 positions × 512 columns: 4 pages (F16) or
				// 8 (F32) in each layer's keys and values.
				p, err := NewPool(PoolConfig{Layers: 2, KVDim: 512, HeadDim: 64, Type: typ, BlockSize: 16, Blocks: 6})
				if err != nil {
					t.Fatal(err)
				}
				// What earlier sequences left behind: nothing is zero.
				for l := range 2 {
					if typ == kernels.F16 {
						for i := range p.k16[l] {
							p.k16[l][i], p.v16[l][i] = 0x3c00, 0xbc00
						}
					} else {
						for i := range p.k32[l] {
							p.k32[l][i], p.v32[l][i] = 1, -1
						}
					}
				}
				held := p.NewSequence(64)
				if err := held.Grow(32); err != nil { // blocks 0 and 1
					t.Fatal(err)
				}
				cached := p.NewSequence(64)
				toks := seqTokens(16, 500)
				row := make([]float32, 512)
				for pos := range toks {
					if err := cached.Reserve(pos); err != nil {
						t.Fatal(err)
					}
					for l := range 2 {
						for j := range row {
							row[j] = float32(pos + j + l)
						}
						cached.Store(l, pos, row, row)
					}
				}
				cached.Commit(toks)
				cached.Release() // block 2, in the prefix cache
				if p.Used() != 2 || p.Cached() != 1 || p.Free() != 3 {
					t.Fatalf("used %d cached %d free %d; want 2, 1, 3", p.Used(), p.Cached(), p.Free())
				}
				before := snapshot(p)

				var run func(int, func(lo, hi int))
				if threads > 1 {
					kp := kernels.NewPool(threads)
					defer kp.Close()
					run = kp.Run
				}
				if err := p.Prefault(context.Background(), run); err != nil {
					t.Fatal(err)
				}

				after := snapshot(p)
				e := p.blockElems
				for a := range before {
					for b := range 3 { // held and cached blocks: unchanged
						if !slices.Equal(before[a].elems[b*e:(b+1)*e], after[a].elems[b*e:(b+1)*e]) {
							t.Fatalf("array %d: block %d (in use or cached) changed", a, b)
						}
					}
					for b := 3; b < 6; b++ { // free blocks: a write in every page
						lo, hi := b*e, (b+1)*e
						addr := func(i int) uintptr { return after[a].base + uintptr(i*after[a].size) }
						for i := lo; i < hi; {
							page := addr(i) &^ 4095
							written := false
							j := i
							for ; j < hi && addr(j)&^4095 == page; j++ {
								written = written || after[a].elems[j] == 0
							}
							if !written {
								t.Fatalf("array %d: free block %d: page at element %d never written", a, b, i)
							}
							i = j
						}
					}
				}
				held.Release()
			})
		}
	}
}

// arrayCopy is one layer's keys or values, widened to float64 for
// comparison, with the address and element size of the original.
type arrayCopy struct {
	elems []float64
	base  uintptr
	size  int
}

func snapshot(p *Pool) []arrayCopy {
	var out []arrayCopy
	for l := 0; l < p.cfg.Layers; l++ {
		if p.k16 != nil {
			for _, arr := range [][]uint16{p.k16[l], p.v16[l]} {
				c := arrayCopy{base: uintptr(unsafe.Pointer(unsafe.SliceData(arr))), size: 2}
				for _, x := range arr {
					c.elems = append(c.elems, float64(x))
				}
				out = append(out, c)
			}
			continue
		}
		for _, arr := range [][]float32{p.k32[l], p.v32[l]} {
			c := arrayCopy{base: uintptr(unsafe.Pointer(unsafe.SliceData(arr))), size: 4}
			for _, x := range arr {
				c.elems = append(c.elems, float64(x))
			}
			out = append(out, c)
		}
	}
	return out
}

// TestPrefaultCancelled: a cancelled Prefault (a server stopping during its
// warm-up) returns the context's error without writing the pool.
func TestPrefaultCancelled(t *testing.T) {
	p, err := NewPool(PoolConfig{Layers: 2, KVDim: 512, HeadDim: 64, Type: kernels.F16, BlockSize: 16, Blocks: 8})
	if err != nil {
		t.Fatal(err)
	}
	for l := range 2 {
		for i := range p.k16[l] {
			p.k16[l][i], p.v16[l][i] = 1, 1
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Prefault(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Prefault = %v, want context.Canceled", err)
	}
	for l := range 2 {
		for _, arr := range [][]uint16{p.k16[l], p.v16[l]} {
			if i := slices.Index(arr, 0); i >= 0 {
				t.Fatalf("layer %d: element %d written after the cancel", l, i)
			}
		}
	}
}
