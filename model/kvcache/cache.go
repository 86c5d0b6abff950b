package kvcache

import (
	"errors"
	"fmt"

	"github.com/conclave-ai/conclave/kernels"
)

var (
	// ErrFull is returned when a position does not fit: past the sequence's
	// context, or no block is free or evictable in the pool.
	ErrFull = errors.New("kvcache: context is full")
	// ErrInvalidConfig is wrapped by Config.Validate's errors.
	ErrInvalidConfig = errors.New("kvcache: invalid config")
)

// Config is the shape of a standalone cache (New): one sequence with a
// private pool that holds its whole context.
type Config struct {
	Layers int           // number of transformer layers
	Ctx    int           // positions the cache can hold
	KVDim  int           // floats per position per layer: kv heads × head dim
	Type   kernels.DType // kernels.F16 (what the CLI uses by default, as llama.cpp) or kernels.F32
	// BlockSize is positions per block; 0 means one block of Ctx positions
	// (a contiguous cache).
	BlockSize int
	// HeadDim is the floats of one kv head; 0 means KVDim (a block is then
	// row-major: position after position). See PoolConfig.HeadDim.
	HeadDim int
}

// Validate reports whether the configuration is usable.
func (c Config) Validate() error {
	if c.Layers <= 0 || c.Ctx <= 0 || c.KVDim <= 0 {
		return fmt.Errorf("%w: layers, ctx and kv dim must be positive (got %d, %d, %d)", ErrInvalidConfig, c.Layers, c.Ctx, c.KVDim)
	}
	if c.BlockSize < 0 {
		return fmt.Errorf("%w: negative block size %d", ErrInvalidConfig, c.BlockSize)
	}
	if c.Type != kernels.F16 && c.Type != kernels.F32 {
		return fmt.Errorf("%w: type must be F16 or F32, got %v", ErrInvalidConfig, c.Type)
	}
	if c.HeadDim < 0 || (c.HeadDim > 0 && c.KVDim%c.HeadDim != 0) {
		return fmt.Errorf("%w: kv dim %d is not a whole number of heads of %d", ErrInvalidConfig, c.KVDim, c.HeadDim)
	}
	return nil
}

// Cache is the K/V store of one sequence: a block table into a Pool. Block i
// of the table holds positions [i·BlockSize, (i+1)·BlockSize). It is not
// safe for concurrent use; the goroutine that owns the pool is its only
// user.
type Cache struct {
	pool  *Pool
	ctx   int
	len   int     // positions [0, len) hold valid data
	table []int32 // block ids; len(table)·BlockSize ≥ len
	own   bool    // the pool is private to this cache (New)
	reqBS int     // Config.BlockSize given to New

	// The first committed blocks are registered in (or were matched from)
	// the prefix cache; chain is the key of the last of them.
	committed int
	chain     uint64
	keys      []uint64 // keys[i]: prefix-cache key of committed block i
	gen       uint64   // the pool's generation when the sequence started (Pool.Invalidate)
	// collided: a committed block's key names another block (a hash
	// collision), so the chain after it would name that block's prefix:
	// nothing more is registered.
	collided bool
}

// New allocates a standalone cache for cfg.Ctx positions: a private pool of
// ⌈Ctx/BlockSize⌉ blocks (one block when BlockSize is 0) and one sequence.
func New(cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bs := cfg.BlockSize
	if bs == 0 || bs > cfg.Ctx {
		bs = cfg.Ctx
	}
	p, err := NewPool(PoolConfig{Layers: cfg.Layers, KVDim: cfg.KVDim, Type: cfg.Type, BlockSize: bs, Blocks: (cfg.Ctx + bs - 1) / bs, HeadDim: cfg.HeadDim})
	if err != nil {
		return nil, err
	}
	c := p.NewSequence(cfg.Ctx)
	c.own, c.reqBS = true, cfg.BlockSize
	return c, nil
}

// Config returns the sequence's shape: for a cache from New, the Config it
// was given; for a sequence of a shared pool, the pool's BlockSize.
func (c *Cache) Config() Config {
	pc := c.pool.cfg
	bs := pc.BlockSize
	if c.own {
		bs = c.reqBS
	}
	return Config{Layers: pc.Layers, Ctx: c.ctx, KVDim: pc.KVDim, Type: pc.Type, BlockSize: bs, HeadDim: pc.HeadDim}
}

// Pool returns the pool the sequence draws blocks from.
func (c *Cache) Pool() *Pool { return c.pool }

// Type is the element type of stored keys and values.
func (c *Cache) Type() kernels.DType { return c.pool.cfg.Type }

// Len is the number of positions written so far.
func (c *Cache) Len() int { return c.len }

// BlockSize is the number of positions per block.
func (c *Cache) BlockSize() int { return c.pool.cfg.BlockSize }

// Blocks is the number of blocks in the sequence's table.
func (c *Cache) Blocks() int { return len(c.table) }

// Bytes is the memory held: for a cache from New, its private pool; for a
// sequence of a shared pool, the blocks in its table.
func (c *Cache) Bytes() int64 {
	if c.own {
		return c.pool.Bytes()
	}
	return int64(len(c.table)) * c.pool.cfg.BlockBytes()
}

// Truncate forgets positions at and after n (for rewinding a sequence) and
// gives back the blocks wholly past the new length.
func (c *Cache) Truncate(n int) {
	if n >= c.len {
		return
	}
	c.len = max(n, 0)
	bs := c.pool.cfg.BlockSize
	keep := (c.len + bs - 1) / bs
	for i := len(c.table) - 1; i >= keep; i-- {
		c.pool.release(c.table[i])
	}
	c.table = c.table[:keep]
	// Only whole blocks stay committed: a block the new length ends inside
	// will be written again, so its key (and the chain after it) must be
	// computed again too, even when the block was never registered (its
	// prefix was cached already, or the cache was invalidated).
	c.uncommit(c.len / bs)
}

// Release gives back every block (registered ones stay in the prefix cache)
// and empties the sequence. The Cache may be reused afterwards.
func (c *Cache) Release() {
	// Last block first: cached blocks are evicted in release order, so the
	// end of a prefix goes before its beginning, which more requests share.
	for i := len(c.table) - 1; i >= 0; i-- {
		c.pool.release(c.table[i])
	}
	c.table = c.table[:0]
	c.keys = c.keys[:0]
	c.len, c.committed, c.chain = 0, 0, 0
	c.gen, c.collided = c.pool.gen, false
}

// Grow makes sure blocks cover positions [0, n) without changing Len. It
// fails with ErrFull when n exceeds the context or the pool has no free or
// evictable block left; blocks it got before failing stay in the table.
func (c *Cache) Grow(n int) error {
	if n > c.ctx {
		return fmt.Errorf("%w: %d positions, context %d", ErrFull, n, c.ctx)
	}
	bs := c.pool.cfg.BlockSize
	for len(c.table)*bs < n {
		b, ok := c.pool.alloc()
		if !ok {
			return fmt.Errorf("%w: no free block for position %d (%d blocks, all in use)", ErrFull, len(c.table)*bs, c.pool.cfg.Blocks)
		}
		c.table = append(c.table, b)
	}
	return nil
}

// Reserve checks that position pos fits and marks [0, pos] as used. A
// position inside a block that is shared or in the prefix cache gets a
// private copy of that block first, so shared blocks are never written.
func (c *Cache) Reserve(pos int) error {
	if pos < 0 || pos >= c.ctx {
		return fmt.Errorf("%w: position %d, context %d", ErrFull, pos, c.ctx)
	}
	if err := c.Grow(pos + 1); err != nil {
		return err
	}
	i := pos / c.pool.cfg.BlockSize
	if b := c.table[i]; c.pool.ref[b] > 1 || c.pool.registered[b] {
		if err := c.makePrivate(i); err != nil {
			return err
		}
	}
	if pos+1 > c.len {
		c.len = pos + 1
	}
	return nil
}

// makePrivate replaces table entry i by a block only this sequence holds.
func (c *Cache) makePrivate(i int) error {
	p, b := c.pool, c.table[i]
	if p.ref[b] == 1 {
		p.unregister(b) // ours alone: forget it in the prefix cache
	} else {
		nb, ok := p.alloc()
		if !ok {
			return fmt.Errorf("%w: no free block to copy shared block %d", ErrFull, i)
		}
		p.copyBlock(nb, b)
		p.release(b)
		c.table[i] = nb
	}
	c.uncommit(i)
	return nil
}

// uncommit forgets that blocks at and after i are committed.
func (c *Cache) uncommit(i int) {
	if c.committed <= i {
		return
	}
	c.committed = i
	c.keys = c.keys[:i]
	c.chain = 0
	if i > 0 {
		c.chain = c.keys[i-1]
	}
}

// Store writes the key and value rows (KVDim floats each) of one position.
// The position must have been reserved. Store changes no state of the
// Cache, only the position's memory, so stores of distinct reserved
// positions (of one sequence or several) may run concurrently; the model's
// runner stores a batch's rows from several threads.
func (c *Cache) Store(layer, pos int, k, v []float32) {
	p := c.pool
	d, bs, hd := p.cfg.KVDim, p.cfg.BlockSize, p.cfg.headDim()
	base := int(c.table[pos/bs])*p.blockElems + (pos%bs)*hd
	for h := 0; h < d; h += hd {
		off := base + h*bs // head h/hd's rows start at (h/hd)·bs·hd
		if p.k16 != nil {
			kernels.F32ToF16Row(p.k16[layer][off:off+hd], k[h:h+hd])
			kernels.F32ToF16Row(p.v16[layer][off:off+hd], v[h:h+hd])
		} else {
			copy(p.k32[layer][off:off+hd], k[h:h+hd])
			copy(p.v32[layer][off:off+hd], v[h:h+hd])
		}
	}
}

// HeadDim is the floats of one head in the block layout (Config.HeadDim,
// or KVDim). A block holds, for each head in turn, its BlockSize positions
// of HeadDim floats: column j of position p of a block (j < KVDim) is at
// (j/HeadDim)·BlockSize·HeadDim + p·HeadDim + j%HeadDim. With HeadDim =
// KVDim that is row-major, position after position.
func (c *Cache) HeadDim() int { return c.pool.cfg.headDim() }

// K16 returns the F16 keys of block i of the sequence in a layer (BlockSize
// positions × KVDim, laid out as HeadDim says); nil for an F32 cache.
func (c *Cache) K16(layer, i int) []uint16 {
	if c.pool.k16 == nil {
		return nil
	}
	e := c.pool.blockElems
	o := int(c.table[i]) * e
	return c.pool.k16[layer][o : o+e]
}

// V16 returns the F16 values of block i in a layer; nil for an F32 cache.
func (c *Cache) V16(layer, i int) []uint16 {
	if c.pool.v16 == nil {
		return nil
	}
	e := c.pool.blockElems
	o := int(c.table[i]) * e
	return c.pool.v16[layer][o : o+e]
}

// K32 returns the F32 keys of block i in a layer; nil for an F16 cache.
func (c *Cache) K32(layer, i int) []float32 {
	if c.pool.k32 == nil {
		return nil
	}
	e := c.pool.blockElems
	o := int(c.table[i]) * e
	return c.pool.k32[layer][o : o+e]
}

// V32 returns the F32 values of block i in a layer; nil for an F16 cache.
func (c *Cache) V32(layer, i int) []float32 {
	if c.pool.v32 == nil {
		return nil
	}
	e := c.pool.blockElems
	o := int(c.table[i]) * e
	return c.pool.v32[layer][o : o+e]
}

// AttachPrefix fills an empty sequence with the longest run of leading full
// blocks of tokens found in the prefix cache, taking a reference on each,
// and returns the number of positions it now holds (a multiple of
// BlockSize, possibly 0). Callers that need logits for the last token pass
// tokens without it, so at least one position is left to compute.
func (c *Cache) AttachPrefix(tokens []int32) int {
	if c.len != 0 || len(c.table) != 0 {
		panic("kvcache: AttachPrefix on a sequence that holds positions")
	}
	p, bs := c.pool, c.pool.cfg.BlockSize
	c.gen, c.collided = p.gen, false
	for (len(c.table)+1)*bs <= min(len(tokens), c.ctx) {
		i := len(c.table)
		b, key, ok := p.lookup(c.chain, tokens[i*bs:(i+1)*bs])
		if !ok {
			break
		}
		p.retain(b)
		c.table = append(c.table, b)
		c.chain = key
		c.keys = append(c.keys, key)
		c.committed++
	}
	c.len = len(c.table) * bs
	return c.len
}

// Commit registers in the prefix cache the sequence's full blocks that are
// not yet registered. tokens are the token ids at positions [0, len(tokens))
// of the sequence, len(tokens) ≥ Len; only blocks wholly below Len are
// registered. A block whose prefix is already cached under another block
// stays private (the other one serves later lookups).
func (c *Cache) Commit(tokens []int32) {
	p, bs := c.pool, c.pool.cfg.BlockSize
	full := min(c.len, len(tokens)) / bs
	for c.committed < full {
		i := c.committed
		toks := tokens[i*bs : (i+1)*bs]
		b := c.table[i]
		_, key, found := p.lookup(c.chain, toks)
		_, taken := p.index[key]
		if taken && !found {
			c.collided = true
		}
		if !taken && !c.collided && !p.registered[b] && p.ref[b] == 1 && c.gen == p.gen {
			p.registered[b] = true
			p.key[b], p.parent[b] = key, c.chain
			copy(p.blockTokens(b), toks)
			p.index[key] = b
		}
		c.chain = key
		c.keys = append(c.keys, key)
		c.committed++
	}
}
