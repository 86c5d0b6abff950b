package kvcache

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Layers: 2, Ctx: 8, KVDim: 4, Type: kernels.F16}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		valid  bool
	}{
		{"f16", func(*Config) {}, true},
		{"f32", func(c *Config) { c.Type = kernels.F32 }, true},
		{"one of everything", func(c *Config) { c.Layers, c.Ctx, c.KVDim = 1, 1, 1 }, true},
		{"zero layers", func(c *Config) { c.Layers = 0 }, false},
		{"negative layers", func(c *Config) { c.Layers = -1 }, false},
		{"zero ctx", func(c *Config) { c.Ctx = 0 }, false},
		{"negative ctx", func(c *Config) { c.Ctx = -8 }, false},
		{"zero kv dim", func(c *Config) { c.KVDim = 0 }, false},
		{"q8_0", func(c *Config) { c.Type = kernels.Q8_0 }, false},
		{"q4_0", func(c *Config) { c.Type = kernels.Q4_0 }, false},
		{"zero value", func(c *Config) { *c = Config{} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			if (err == nil) != tc.valid {
				t.Fatalf("Validate(%+v) = %v, want valid %v", c, err, tc.valid)
			}
			cache, err := New(c)
			if (err == nil) != tc.valid {
				t.Fatalf("New(%+v) error %v, want valid %v", c, err, tc.valid)
			}
			if !tc.valid {
				if cache != nil {
					t.Errorf("New returned a cache with an error")
				}
				return
			}
			if cache.Config() != c || cache.Type() != c.Type || cache.Len() != 0 {
				t.Errorf("config %+v type %v len %d", cache.Config(), cache.Type(), cache.Len())
			}
		})
	}
}

// rows returns n deterministic rows of normal-range floats (|x| in [0.01, 100]).
func rows(seed uint64, n, d int) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, d)
		for j := range out[i] {
			x := float32(math.Pow(10, 4*rng.Float64()-2))
			if rng.IntN(2) == 0 {
				x = -x
			}
			out[i][j] = x
		}
	}
	return out
}

func TestStoreRoundTrip(t *testing.T) {
	const layers, ctx, d = 3, 7, 5 // odd sizes: rows must not bleed into neighbours
	for _, tc := range []struct {
		name string
		typ  kernels.DType
		tol  float64 // relative
	}{
		{"f16", kernels.F16, 1e-3}, // 11-bit significand: ≤ 2⁻¹¹ relative error
		{"f32", kernels.F32, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{Layers: layers, Ctx: ctx, KVDim: d, Type: tc.typ})
			if err != nil {
				t.Fatal(err)
			}
			ks := make([][][]float32, layers)
			vs := make([][][]float32, layers)
			for l := range layers {
				ks[l] = rows(uint64(2*l), ctx, d)
				vs[l] = rows(uint64(2*l+1), ctx, d)
			}
			// Write positions out of order, each layer in turn.
			for _, p := range []int{3, 0, 6, 1, 5, 2, 4} {
				if err := c.Reserve(p); err != nil {
					t.Fatal(err)
				}
				for l := range layers {
					c.Store(l, p, ks[l][p], vs[l][p])
				}
			}
			if c.Len() != ctx {
				t.Errorf("Len %d after filling %d positions", c.Len(), ctx)
			}
			for l := range layers {
				var gotK, gotV []float32
				if tc.typ == kernels.F16 {
					if c.K32(l, 0) != nil || c.V32(l, 0) != nil {
						t.Errorf("F16 cache returns F32 rows")
					}
					gotK, gotV = widen(rows16(c, l, (*Cache).K16)), widen(rows16(c, l, (*Cache).V16))
				} else {
					if c.K16(l, 0) != nil || c.V16(l, 0) != nil {
						t.Errorf("F32 cache returns F16 rows")
					}
					gotK, gotV = rows32(c, l, (*Cache).K32), rows32(c, l, (*Cache).V32)
				}
				if len(gotK) != ctx*d || len(gotV) != ctx*d {
					t.Fatalf("layer %d: %d keys, %d values, want %d each", l, len(gotK), len(gotV), ctx*d)
				}
				for p := range ctx {
					for i := range d {
						check(t, tc.tol, "key", l, p, i, gotK[p*d+i], ks[l][p][i])
						check(t, tc.tol, "value", l, p, i, gotV[p*d+i], vs[l][p][i])
					}
				}
			}
		})
	}
}

// TestStoreHeadLayout checks where Store puts each value for every head
// width: column j of position p of a block at (j/h)·bs·h + p·h + j%h
// (row-major when h is the whole kv dim).
func TestStoreHeadLayout(t *testing.T) {
	const layers, ctx, d, bs = 2, 7, 6, 3
	for _, typ := range []kernels.DType{kernels.F16, kernels.F32} {
		for _, hd := range []int{0, 1, 2, 3, 6} {
			c, err := New(Config{Layers: layers, Ctx: ctx, KVDim: d, Type: typ, BlockSize: bs, HeadDim: hd})
			if err != nil {
				t.Fatal(err)
			}
			h := hd
			if h == 0 {
				h = d
			}
			if c.HeadDim() != h || c.Config().HeadDim != hd {
				t.Errorf("head dim %d: HeadDim() %d, Config().HeadDim %d", hd, c.HeadDim(), c.Config().HeadDim)
			}
			val := func(kv, l, p, j int) float32 { return float32(1000*kv + 100*l + 10*p + j) } // exact in F16
			for p := range ctx {
				if err := c.Reserve(p); err != nil {
					t.Fatal(err)
				}
				for l := range layers {
					k, v := make([]float32, d), make([]float32, d)
					for j := range d {
						k[j], v[j] = val(0, l, p, j), val(1, l, p, j)
					}
					c.Store(l, p, k, v)
				}
			}
			for l := range layers {
				for p := range ctx {
					for j := range d {
						i := (j/h)*bs*h + (p%bs)*h + j%h
						var gk, gv float32
						if typ == kernels.F16 {
							gk, gv = kernels.F16ToF32(c.K16(l, p/bs)[i]), kernels.F16ToF32(c.V16(l, p/bs)[i])
						} else {
							gk, gv = c.K32(l, p/bs)[i], c.V32(l, p/bs)[i]
						}
						if gk != val(0, l, p, j) || gv != val(1, l, p, j) {
							t.Errorf("%v head dim %d: layer %d pos %d col %d: got %v %v, want %v %v", typ, hd, l, p, j, gk, gv, val(0, l, p, j), val(1, l, p, j))
						}
					}
				}
			}
		}
	}
	if _, err := New(Config{Layers: 1, Ctx: 4, KVDim: 6, Type: kernels.F16, HeadDim: 4}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("heads of 4 in a kv dim of 6: %v, want ErrInvalidConfig", err)
	}
	if _, err := NewPool(PoolConfig{Layers: 1, KVDim: 6, Type: kernels.F16, BlockSize: 4, Blocks: 1, HeadDim: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("negative head dim: %v, want ErrInvalidConfig", err)
	}
}

// rows16 concatenates a layer's blocks (the first Len positions).
func rows16(c *Cache, l int, get func(*Cache, int, int) []uint16) []uint16 {
	var out []uint16
	for i := range c.Blocks() {
		out = append(out, get(c, l, i)...)
	}
	return out[:c.Len()*c.Config().KVDim]
}

func rows32(c *Cache, l int, get func(*Cache, int, int) []float32) []float32 {
	var out []float32
	for i := range c.Blocks() {
		out = append(out, get(c, l, i)...)
	}
	return out[:c.Len()*c.Config().KVDim]
}

func widen(h []uint16) []float32 {
	out := make([]float32, len(h))
	for i, x := range h {
		out[i] = kernels.F16ToF32(x)
	}
	return out
}

func check(t *testing.T, tol float64, what string, l, p, i int, got, want float32) {
	t.Helper()
	if tol == 0 {
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("layer %d pos %d %s[%d] = %v, want exactly %v", l, p, what, i, got, want)
		}
		return
	}
	if rel := math.Abs(float64(got)-float64(want)) / math.Abs(float64(want)); rel > tol {
		t.Fatalf("layer %d pos %d %s[%d] = %v, want %v within %g relative (got %g)", l, p, what, i, got, want, tol, rel)
	}
}

func TestStoreReadsOnlyKVDim(t *testing.T) {
	// Longer source rows are cut at KVDim; the next position stays zero.
	c, err := New(Config{Layers: 1, Ctx: 2, KVDim: 2, Type: kernels.F32})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Reserve(0); err != nil {
		t.Fatal(err)
	}
	c.Store(0, 0, []float32{1, 2, 3}, []float32{4, 5, 6})
	if k, v := c.K32(0, 0), c.V32(0, 0); k[0] != 1 || k[1] != 2 || k[2] != 0 || v[0] != 4 || v[1] != 5 || v[2] != 0 {
		t.Errorf("keys %v values %v", k, v)
	}
}

func TestReserveAndTruncate(t *testing.T) {
	c, err := New(Config{Layers: 1, Ctx: 4, KVDim: 2, Type: kernels.F16})
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		op      string // "reserve" or "truncate"
		arg     int
		full    bool // Reserve must fail with ErrFull
		wantLen int
	}
	for i, s := range []step{
		{"reserve", 0, false, 1},
		{"reserve", 2, false, 3},  // marks [0, 2] used
		{"reserve", 1, false, 3},  // rewriting an earlier position keeps Len
		{"reserve", 4, true, 3},   // == Ctx
		{"reserve", 100, true, 3}, // far beyond
		{"reserve", -1, true, 3},
		{"reserve", 3, false, 4}, // the last position fits
		{"reserve", 4, true, 4},
		{"truncate", 10, false, 4}, // beyond Len: no change
		{"truncate", 4, false, 4},
		{"truncate", 2, false, 2},
		{"truncate", 3, false, 2}, // never grows
		{"reserve", 2, false, 3},
		{"truncate", -5, false, 0},
		{"truncate", 0, false, 0},
		{"reserve", 0, false, 1},
	} {
		var err error
		switch s.op {
		case "reserve":
			err = c.Reserve(s.arg)
		case "truncate":
			c.Truncate(s.arg)
		}
		if s.full != errors.Is(err, ErrFull) || (!s.full && err != nil) {
			t.Fatalf("step %d: %s(%d) = %v, want ErrFull %v", i, s.op, s.arg, err, s.full)
		}
		if c.Len() != s.wantLen {
			t.Fatalf("step %d: %s(%d): Len %d, want %d", i, s.op, s.arg, c.Len(), s.wantLen)
		}
	}
}

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want int64
	}{
		{"f16", Config{Layers: 3, Ctx: 5, KVDim: 7, Type: kernels.F16}, 2 * 3 * 5 * 7 * 2},
		{"f32", Config{Layers: 3, Ctx: 5, KVDim: 7, Type: kernels.F32}, 2 * 3 * 5 * 7 * 4},
		{"model-sized", Config{Layers: 8, Ctx: 2048, KVDim: 512, Type: kernels.F16}, 2 * 8 * 2048 * 512 * 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Bytes(); got != tc.want {
				t.Errorf("Bytes %d, want %d", got, tc.want)
			}
			// What was actually allocated, through the accessors.
			if err := c.Grow(tc.cfg.Ctx); err != nil {
				t.Fatal(err)
			}
			var allocated int64
			for l := range tc.cfg.Layers {
				allocated += 2 * int64(len(c.K16(l, 0))+len(c.V16(l, 0)))
				allocated += 4 * int64(len(c.K32(l, 0))+len(c.V32(l, 0)))
			}
			if allocated != c.Bytes() {
				t.Errorf("allocated %d bytes, Bytes reports %d", allocated, c.Bytes())
			}
		})
	}
}
