package kvcache

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"unsafe"

	"github.com/conclave-ai/conclave/kernels"
)

// PoolConfig is the shape of a block pool.
type PoolConfig struct {
	Layers    int           // number of transformer layers
	KVDim     int           // floats per position per layer: kv heads × head dim
	Type      kernels.DType // kernels.F16 (the default, as llama.cpp) or kernels.F32
	BlockSize int           // positions per block, > 0 (16 or 32 for a shared pool)
	Blocks    int           // blocks allocated up front, > 0
	// HeadDim is the floats of one kv head; 0 means KVDim. A block keeps
	// each head's positions together (see Cache.HeadDim), so attention over
	// one head reads contiguous memory.
	HeadDim int
}

// headDim is HeadDim, or KVDim when it is 0.
func (c PoolConfig) headDim() int {
	if c.HeadDim == 0 {
		return c.KVDim
	}
	return c.HeadDim
}

// Validate reports whether the configuration is usable.
func (c PoolConfig) Validate() error {
	if c.Layers <= 0 || c.KVDim <= 0 || c.BlockSize <= 0 || c.Blocks <= 0 {
		return fmt.Errorf("%w: layers, kv dim, block size and blocks must be positive (got %d, %d, %d, %d)", ErrInvalidConfig, c.Layers, c.KVDim, c.BlockSize, c.Blocks)
	}
	if c.Type != kernels.F16 && c.Type != kernels.F32 {
		return fmt.Errorf("%w: type must be F16 or F32, got %v", ErrInvalidConfig, c.Type)
	}
	if c.HeadDim < 0 || c.KVDim%c.headDim() != 0 {
		return fmt.Errorf("%w: kv dim %d is not a whole number of heads of %d", ErrInvalidConfig, c.KVDim, c.HeadDim)
	}
	return nil
}

// BlockBytes is the memory of one block: keys and values of BlockSize
// positions in every layer.
func (c PoolConfig) BlockBytes() int64 {
	return BlockBytes(c.Layers, c.KVDim, c.BlockSize, c.Type)
}

// BlockBytes is the memory of one block of blockSize positions.
func BlockBytes(layers, kvDim, blockSize int, t kernels.DType) int64 {
	el := int64(4)
	if t == kernels.F16 {
		el = 2
	}
	return 2 * int64(layers) * int64(blockSize) * int64(kvDim) * el
}

// Pool is a fixed set of KV blocks shared by many sequences, with a prefix
// cache over full blocks.
//
// Every block is in exactly one state:
//   - free: on the free list, no contents worth keeping;
//   - referenced: held by ref ≥ 1 sequences (in their block tables);
//   - cached: unreferenced but registered in the prefix cache, on the LRU
//     list, reusable by a later sequence whose tokens match, or evicted
//     (least recently released first) when a block is needed and none is
//     free.
//
// A block is registered only when it is full and its tokens are known
// (Cache.Commit); a registered or shared block is never written again: a
// sequence that rewrites a position in one gets a private copy first. So
// only full, immutable blocks are ever shared.
//
// The prefix cache key of block i of a sequence is the hash of block i−1's
// key and block i's token ids, so a key names the whole prefix. Each entry
// also keeps its parent key and its tokens, compared on lookup, and a
// sequence whose block's key turns out to name another block (a collision)
// registers nothing after it, so a hash collision cannot hand a sequence
// another prefix's keys and values. The
// hash is seeded per pool (hash/maphash), so keys are not predictable from
// outside.
//
// A Pool is not safe for concurrent use: one goroutine (the engine's
// scheduler, or the owner of a Cache from New) owns it and the sequences
// drawn from it.
type Pool struct {
	cfg        PoolConfig
	blockElems int // BlockSize × KVDim
	k16, v16   [][]uint16
	k32, v32   [][]float32

	ref        []int32
	registered []bool
	key        []uint64 // prefix-cache key of a registered block
	parent     []uint64 // key of the block before it (0 for the first)
	tokens     []int32  // Blocks × BlockSize: token ids of registered blocks
	index      map[uint64]int32

	free       []int32 // stack of free blocks
	prev, next []int32 // LRU list of cached (registered, unreferenced) blocks
	head, tail int32   // head is evicted first; −1 when empty
	lruLen     int

	seed maphash.Seed
	hbuf [8]byte
	// collide, when set (tests), replaces the key of the blocks it names,
	// to stage a hash collision.
	collide func(parent uint64, tokens []int32) (uint64, bool)
	gen     uint64 // prefix-cache generation, mixed into every key; see Invalidate

	evictions int64
}

// NewPool allocates every block of cfg up front.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{
		cfg:        cfg,
		blockElems: cfg.BlockSize * cfg.KVDim,
		ref:        make([]int32, cfg.Blocks),
		registered: make([]bool, cfg.Blocks),
		key:        make([]uint64, cfg.Blocks),
		parent:     make([]uint64, cfg.Blocks),
		tokens:     make([]int32, cfg.Blocks*cfg.BlockSize),
		index:      make(map[uint64]int32),
		free:       make([]int32, cfg.Blocks),
		prev:       make([]int32, cfg.Blocks),
		next:       make([]int32, cfg.Blocks),
		head:       -1,
		tail:       -1,
		seed:       maphash.MakeSeed(),
	}
	n := cfg.Blocks * p.blockElems
	// On huge pages where the OS offers them: attention streams the cache
	// (kernels.AllocHuge).
	u16 := func() []uint16 {
		return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(kernels.AllocHuge(2*n)))), n)
	}
	f32 := func() []float32 {
		return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(kernels.AllocHuge(4*n)))), n)
	}
	for l := 0; l < cfg.Layers; l++ {
		if cfg.Type == kernels.F16 {
			p.k16 = append(p.k16, u16())
			p.v16 = append(p.v16, u16())
		} else {
			p.k32 = append(p.k32, f32())
			p.v32 = append(p.v32, f32())
		}
	}
	// Pop order 0, 1, 2, …: the stack holds the blocks in reverse.
	for i := range p.free {
		p.free[i] = int32(cfg.Blocks - 1 - i)
	}
	return p, nil
}

// Prefault writes to every page of the free blocks' memory, so that the
// OS backs them now rather than when a step first stores keys there: a
// block taken from the free list for the first time otherwise costs its
// step a page fault per page (a huge page's zeroing, several milliseconds
// on a VM whose host backs guest memory lazily). Free blocks hold nothing
// a sequence reads, so the zeros written are harmless; blocks in use or in
// the prefix cache are left alone. run splits the work over threads (as
// kernels.Pool.Run does; nil runs it on the caller). It stops early, with
// ctx's error, when ctx is done (a server stopping during its warm-up);
// the pages not written yet are then faulted in by their first use as
// before. Like every Pool method it must not run concurrently with the
// pool's other use.
func (p *Pool) Prefault(ctx context.Context, run func(n int, fn func(lo, hi int))) error {
	if run == nil {
		run = func(n int, fn func(lo, hi int)) { fn(0, n) }
	}
	free := p.free
	e := p.blockElems
	run(2*p.cfg.Layers, func(lo, hi int) {
		for a := lo; a < hi; a++ {
			var u16 []uint16
			var f32 []float32
			switch l := a / 2; {
			case p.k16 != nil && a%2 == 0:
				u16 = p.k16[l]
			case p.k16 != nil:
				u16 = p.v16[l]
			case a%2 == 0:
				f32 = p.k32[l]
			default:
				f32 = p.v32[l]
			}
			for n, b := range free {
				if n%64 == 0 && ctx.Err() != nil {
					return
				}
				o := int(b) * e
				if u16 != nil {
					for i := o; i < o+e; i += pageElems16 {
						u16[i] = 0
					}
					u16[o+e-1] = 0
				} else {
					for i := o; i < o+e; i += pageElems16 / 2 {
						f32[i] = 0
					}
					f32[o+e-1] = 0
				}
			}
		}
	})
	return ctx.Err()
}

// pageElems16 is the uint16 elements of a 4 KiB page, the smallest page
// Prefault must write once.
const pageElems16 = 2048

// Config returns the pool's shape.
func (p *Pool) Config() PoolConfig { return p.cfg }

// Bytes is the memory of all blocks.
func (p *Pool) Bytes() int64 { return int64(p.cfg.Blocks) * p.cfg.BlockBytes() }

// Blocks is the number of blocks in the pool.
func (p *Pool) Blocks() int { return p.cfg.Blocks }

// Free is the number of blocks on the free list.
func (p *Pool) Free() int { return len(p.free) }

// Cached is the number of unreferenced blocks kept in the prefix cache.
func (p *Pool) Cached() int { return p.lruLen }

// Used is the number of blocks held by at least one sequence.
func (p *Pool) Used() int { return p.cfg.Blocks - len(p.free) - p.lruLen }

// Available is the number of blocks an allocation can get now: free ones
// plus cached ones it may evict.
func (p *Pool) Available() int { return len(p.free) + p.lruLen }

// Evictions counts cached blocks evicted to make room since NewPool.
func (p *Pool) Evictions() int64 { return p.evictions }

// NewSequence returns an empty sequence of up to ctx positions (> 0) that
// draws blocks from p.
func (p *Pool) NewSequence(ctx int) *Cache {
	return &Cache{pool: p, ctx: ctx, gen: p.gen}
}

// Invalidate empties the prefix cache: no block registered so far is found
// by later lookups, and blocks that sequences computed before the call are
// never registered (they stay private to their sequence). Use it when the
// weights change (a hot expert update): keys and values computed with the
// old weights must not seed new sequences. Running sequences keep their
// blocks.
func (p *Pool) Invalidate() {
	p.gen++
	for b := range p.registered {
		if !p.registered[b] {
			continue
		}
		p.unregister(int32(b))
		if p.ref[b] == 0 { // cached, unreferenced: free it
			p.lruRemove(int32(b))
			p.free = append(p.free, int32(b))
		}
	}
}

// alloc takes a free block, or evicts the least recently released cached
// one; ok is false when every block is referenced.
func (p *Pool) alloc() (int32, bool) {
	var b int32
	switch {
	case len(p.free) > 0:
		b = p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
	case p.lruLen > 0:
		b = p.head
		p.lruRemove(b)
		p.unregister(b)
		p.evictions++
	default:
		return -1, false
	}
	p.ref[b] = 1
	return b, true
}

// retain adds a reference to b (which is referenced or cached).
func (p *Pool) retain(b int32) {
	if p.ref[b] == 0 {
		p.lruRemove(b)
	}
	p.ref[b]++
}

// release drops a reference to b; an unreferenced block goes to the LRU
// list when registered, to the free list otherwise.
func (p *Pool) release(b int32) {
	p.ref[b]--
	switch {
	case p.ref[b] > 0:
	case p.ref[b] < 0:
		panic(fmt.Sprintf("kvcache: block %d released more often than retained", b))
	case p.registered[b]:
		p.lruPush(b)
	default:
		p.free = append(p.free, b)
	}
}

func (p *Pool) unregister(b int32) {
	if !p.registered[b] {
		return
	}
	if i, ok := p.index[p.key[b]]; ok && i == b {
		delete(p.index, p.key[b])
	}
	p.registered[b] = false
}

func (p *Pool) lruPush(b int32) {
	p.prev[b], p.next[b] = p.tail, -1
	if p.tail >= 0 {
		p.next[p.tail] = b
	} else {
		p.head = b
	}
	p.tail = b
	p.lruLen++
}

func (p *Pool) lruRemove(b int32) {
	if p.prev[b] >= 0 {
		p.next[p.prev[b]] = p.next[b]
	} else {
		p.head = p.next[b]
	}
	if p.next[b] >= 0 {
		p.prev[p.next[b]] = p.prev[b]
	} else {
		p.tail = p.prev[b]
	}
	p.lruLen--
}

// blockKey is the prefix-cache key of a block of tokens after the block
// whose key is parent (0 for the first block).
func (p *Pool) blockKey(parent uint64, tokens []int32) uint64 {
	if p.collide != nil {
		if k, ok := p.collide(parent, tokens); ok {
			return k
		}
	}
	var h maphash.Hash
	h.SetSeed(p.seed)
	binary.LittleEndian.PutUint64(p.hbuf[:], parent)
	h.Write(p.hbuf[:])
	binary.LittleEndian.PutUint64(p.hbuf[:], p.gen)
	h.Write(p.hbuf[:])
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(p.hbuf[:4], uint32(t))
		h.Write(p.hbuf[:4])
	}
	k := h.Sum64()
	if k == 0 {
		k = 1 // 0 means "no parent"
	}
	return k
}

// lookup returns the registered block holding tokens after parent.
func (p *Pool) lookup(parent uint64, tokens []int32) (int32, uint64, bool) {
	k := p.blockKey(parent, tokens)
	b, ok := p.index[k]
	if !ok || p.parent[b] != parent || !slices.Equal(p.blockTokens(b), tokens) {
		return -1, k, false
	}
	return b, k, true
}

func (p *Pool) blockTokens(b int32) []int32 {
	bs := p.cfg.BlockSize
	return p.tokens[int(b)*bs : (int(b)+1)*bs]
}

// copyBlock copies the contents of block src into dst in every layer.
func (p *Pool) copyBlock(dst, src int32) {
	e := p.blockElems
	d, s := int(dst)*e, int(src)*e
	for l := 0; l < p.cfg.Layers; l++ {
		if p.k16 != nil {
			copy(p.k16[l][d:d+e], p.k16[l][s:s+e])
			copy(p.v16[l][d:d+e], p.v16[l][s:s+e])
		} else {
			copy(p.k32[l][d:d+e], p.k32[l][s:s+e])
			copy(p.v32[l][d:d+e], p.v32[l][s:s+e])
		}
	}
}
