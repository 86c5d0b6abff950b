package kvcache

import (
	"errors"
	"fmt"

	"github.com/conclave-ai/conclave/kernels"
)

var (
	// ErrFull is returned when a position does not fit in the cache's context.
	ErrFull = errors.New("kvcache: context is full")
	// ErrInvalidConfig is wrapped by Config.Validate's errors.
	ErrInvalidConfig = errors.New("kvcache: invalid config")
)

// Config is the shape of a cache.
type Config struct {
	Layers int           // number of transformer layers
	Ctx    int           // positions the cache can hold
	KVDim  int           // floats per position per layer: kv heads × head dim
	Type   kernels.DType // kernels.F16 (what the CLI uses by default, as llama.cpp) or kernels.F32
}

// Validate reports whether the configuration is usable.
func (c Config) Validate() error {
	if c.Layers <= 0 || c.Ctx <= 0 || c.KVDim <= 0 {
		return fmt.Errorf("%w: layers, ctx and kv dim must be positive (got %d, %d, %d)", ErrInvalidConfig, c.Layers, c.Ctx, c.KVDim)
	}
	if c.Type != kernels.F16 && c.Type != kernels.F32 {
		return fmt.Errorf("%w: type must be F16 or F32, got %v", ErrInvalidConfig, c.Type)
	}
	return nil
}

// Cache is the K/V store of one sequence. It is not safe for concurrent
// writers; the engine that owns the sequence is its only writer.
type Cache struct {
	cfg Config
	len int // positions [0, len) hold valid data
	k16 [][]uint16
	v16 [][]uint16
	k32 [][]float32
	v32 [][]float32
}

// New allocates a cache for cfg.Ctx positions.
func New(cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg}
	n := cfg.Ctx * cfg.KVDim
	for l := 0; l < cfg.Layers; l++ {
		if cfg.Type == kernels.F16 {
			c.k16 = append(c.k16, make([]uint16, n))
			c.v16 = append(c.v16, make([]uint16, n))
		} else {
			c.k32 = append(c.k32, make([]float32, n))
			c.v32 = append(c.v32, make([]float32, n))
		}
	}
	return c, nil
}

// Config returns the cache's shape.
func (c *Cache) Config() Config { return c.cfg }

// Type is the element type of stored keys and values.
func (c *Cache) Type() kernels.DType { return c.cfg.Type }

// Len is the number of positions written so far.
func (c *Cache) Len() int { return c.len }

// Bytes is the memory held by the cache.
func (c *Cache) Bytes() int64 {
	el := int64(4)
	if c.cfg.Type == kernels.F16 {
		el = 2
	}
	return 2 * int64(c.cfg.Layers) * int64(c.cfg.Ctx) * int64(c.cfg.KVDim) * el
}

// Truncate forgets positions at and after n (for rewinding a sequence).
func (c *Cache) Truncate(n int) {
	if n < c.len {
		c.len = max(n, 0)
	}
}

// Reserve checks that position pos fits and marks [0, pos] as used.
func (c *Cache) Reserve(pos int) error {
	if pos < 0 || pos >= c.cfg.Ctx {
		return fmt.Errorf("%w: position %d, context %d", ErrFull, pos, c.cfg.Ctx)
	}
	if pos+1 > c.len {
		c.len = pos + 1
	}
	return nil
}

// Store writes the key and value rows (KVDim floats each) of one position.
// The position must have been reserved.
func (c *Cache) Store(layer, pos int, k, v []float32) {
	d := c.cfg.KVDim
	off := pos * d
	if c.cfg.Type == kernels.F16 {
		kd, vd := c.k16[layer][off:off+d], c.v16[layer][off:off+d]
		for i := range d {
			kd[i] = kernels.F32ToF16(k[i])
			vd[i] = kernels.F32ToF16(v[i])
		}
		return
	}
	copy(c.k32[layer][off:off+d], k[:d])
	copy(c.v32[layer][off:off+d], v[:d])
}

// K16 and V16 return the F16 rows of a layer (positions × KVDim); nil for an F32 cache.
func (c *Cache) K16(layer int) []uint16 {
	if c.k16 == nil {
		return nil
	}
	return c.k16[layer]
}

// V16 returns the F16 values of a layer; nil for an F32 cache.
func (c *Cache) V16(layer int) []uint16 {
	if c.v16 == nil {
		return nil
	}
	return c.v16[layer]
}

// K32 returns the F32 keys of a layer; nil for an F16 cache.
func (c *Cache) K32(layer int) []float32 {
	if c.k32 == nil {
		return nil
	}
	return c.k32[layer]
}

// V32 returns the F32 values of a layer; nil for an F16 cache.
func (c *Cache) V32(layer int) []float32 {
	if c.v32 == nil {
		return nil
	}
	return c.v32[layer]
}
