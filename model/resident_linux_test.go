package model

import (
	"slices"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

// residentPages counts the pages under b mapped in this process and all its
// pages (skipping the test where that cannot be read).
func residentPages(t *testing.T, b []byte) (present, pages int) {
	t.Helper()
	present, pages, err := gguf.ResidentPages(b)
	if err != nil {
		t.Skip(err)
	}
	return present, pages
}

// After KeepResident, the dense weights and hosted experts are resident
// and other experts hold at most their partial edge pages, even after the
// hosted ones compute.
func TestKeepResident(t *testing.T) {
	w, _ := testModel(t, tinyConfig(t, func(c *synth.Config) {
		c.Dim, c.Heads, c.KVHeads, c.FFN, c.Vocab = 256, 4, 2, 1024, 512 // 1 MiB per expert matrix
	}))
	hosted := func(l, e int) bool { return (l == 0 && e == 1) || (l == 1 && e == 2) }
	// Compute with every expert first, so that everything is mapped.
	pool := kernels.NewPool(1)
	defer pool.Close()
	var scratch ExpertScratch
	in, out := make([]float32, w.Dim), make([]float32, w.Dim)
	run := func(keep func(l, e int) bool) {
		for l := range w.Blocks {
			for e := range w.Blocks[l].Experts {
				if keep(l, e) {
					w.Blocks[l].Experts[e].Forward(pool, &scratch, in, 1, out)
				}
			}
		}
	}
	run(func(int, int) bool { return true })
	if err := w.KeepResident(hosted); err != nil {
		t.Fatal(err)
	}
	run(hosted) // hosted experts compute without faulting neighbours in
	for l := range w.Blocks {
		for e, x := range w.Blocks[l].Experts {
			for _, m := range []kernels.Matrix{x.Gate, x.Up, x.Down} {
				p, all := residentPages(t, m.Data)
				switch {
				case hosted(l, e) && p != all:
					t.Errorf("hosted expert (%d, %d): %d of %d pages resident", l, e, p, all)
				case !hosted(l, e) && p > 2:
					t.Errorf("expert (%d, %d) not hosted: %d of %d pages resident", l, e, p, all)
				}
			}
		}
		for _, m := range []kernels.Matrix{w.Blocks[l].Wq, w.Blocks[l].Wo, w.Blocks[l].GateInp} {
			if p, all := residentPages(t, m.Data); p != all {
				t.Errorf("layer %d dense weights: %d of %d pages resident", l, p, all)
			}
		}
	}
}

// Where the CPU computes with packed tiles, KeepResident gives the dense
// weights and the hosted experts tiles and releases their file pages, drops
// the tiles of experts no longer hosted, and the experts compute the same
// outputs from the tiles as from the file.
func TestKeepResidentTiles(t *testing.T) {
	w, _ := testModel(t, tinyConfig(t, func(c *synth.Config) {
		c.Dim, c.Heads, c.KVHeads, c.FFN, c.Vocab = 256, 4, 2, 1024, 512
		c.Type = kernels.Q8_0
	}))
	if !kernels.TilesUseful(w.Blocks[0].Wq) {
		t.Skip("this CPU computes without packed tiles")
	}
	pool := kernels.NewPool(1)
	defer pool.Close()
	var scratch ExpertScratch
	in := make([]float32, w.Dim)
	for i := range in {
		in[i] = float32(i%7) - 3
	}
	forward := func(x *Expert) []float32 {
		out := make([]float32, w.Dim)
		x.Forward(pool, &scratch, in, 1, out)
		return out
	}
	before := forward(&w.Blocks[1].Experts[2])
	check := func(hosted func(l, e int) bool) {
		t.Helper()
		if err := w.KeepResident(hosted); err != nil {
			t.Fatal(err)
		}
		for l := range w.Blocks {
			for e, x := range w.Blocks[l].Experts {
				for _, m := range []kernels.Matrix{x.Gate, x.Up, x.Down} {
					p, all := residentPages(t, m.Data)
					tiled := m.Tiles.Load() != nil
					switch {
					case hosted(l, e) && !tiled:
						t.Errorf("hosted expert (%d, %d) has no tiles", l, e)
					case !hosted(l, e) && tiled:
						t.Errorf("expert (%d, %d) not hosted keeps its tiles", l, e)
					case p > 2:
						t.Errorf("expert (%d, %d): %d of %d file pages resident", l, e, p, all)
					}
				}
			}
			if m := w.Blocks[l].Wq; m.Tiles.Load() == nil {
				t.Errorf("layer %d: Wq has no tiles", l)
			}
			if p, all := residentPages(t, w.Blocks[l].GateInp.Data); p != all {
				t.Errorf("layer %d: router (too few rows to tile) %d of %d pages resident", l, p, all)
			}
		}
	}
	// Each matrix's file pages go as soon as it is packed: never the file
	// and the tiles at once.
	var packed []kernels.Matrix
	afterPack = func(m kernels.Matrix) {
		for _, q := range append(packed, m) {
			if p, all := residentPages(t, q.Data); p > 2 {
				t.Errorf("while packing: %d of %d file pages of a packed matrix resident", p, all)
			}
		}
		packed = append(packed, m)
	}
	defer func() { afterPack = nil }()
	check(func(l, e int) bool { return (l == 0 && e == 1) || (l == 1 && e == 2) })
	if len(packed) == 0 {
		t.Error("no matrix was packed")
	}
	afterPack = nil
	if got := forward(&w.Blocks[1].Experts[2]); !slices.Equal(got, before) {
		t.Error("the expert computes differently from its tiles")
	}
	check(func(l, e int) bool { return l == 0 && e == 3 })
}
