package model

import (
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
