package cluster_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

// TestLayoutOf: each expert's ranges hold exactly the bytes its bound
// weights point at (merged and legacy per-expert tensors), and dense
// ranges plus expert ranges never overlap.
func TestLayoutOf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		legacy bool
	}{{"merged", false}, {"legacy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			path := testmodel.Write(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.LegacyExperts = tc.legacy }))
			f, w := testmodel.Open(t, path)
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lay, err := cluster.LayoutOf(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(lay.Experts) != w.Layers*w.Experts {
				t.Fatalf("%d experts in the layout, want %d", len(lay.Experts), w.Layers*w.Experts)
			}
			owner := make([]int8, len(raw)) // 1 dense, 2 expert
			mark := func(r cluster.ByteRange, who int8) {
				for i := r.Off; i < r.Off+r.Len; i++ {
					if owner[i] != 0 {
						t.Fatalf("byte %d in two ranges", i)
					}
					owner[i] = who
				}
			}
			for _, r := range lay.Dense {
				mark(r, 1)
			}
			for l := range w.Layers {
				for e := range w.Experts {
					rs := lay.Experts[router.ExpertID{Layer: l, Index: e}]
					ex := w.FeedForward(l, e)
					want := [][]byte{ex.Gate.Data, ex.Up.Data, ex.Down.Data}
					if len(rs) != 3 {
						t.Fatalf("expert %d/%d: %d ranges, want 3", l, e, len(rs))
					}
					// Ranges come in file order; each must hold one of
					// the expert's three matrices.
					used := map[int]bool{}
					for i, r := range rs {
						mark(r, 2)
						found := false
						for j, wb := range want {
							if !used[j] && bytes.Equal(raw[r.Off:r.Off+r.Len], wb) {
								used[j], found = true, true
								break
							}
						}
						if !found {
							t.Errorf("expert %d/%d range %d holds none of its matrices' bytes", l, e, i)
						}
					}
				}
			}
		})
	}
}
