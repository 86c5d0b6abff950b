package expert

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// TestBatchMatchesForward checks that a Batch of one layer's experts gives
// every group the same bits as each expert's own Forward, and counts the
// calls and rows on each expert.
func TestBatchMatchesForward(t *testing.T) {
	_, w := testmodel.Load(t, testmodel.Config(t, "tiny", nil))
	pool := kernels.NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(71, 72))
	var es []*Expert
	var groups []*model.ExpertGroup
	var want [][]float32
	for i := range w.Experts {
		e, err := New(w, router.ExpertID{Layer: 1, Index: i}, pool)
		if err != nil {
			t.Fatal(err)
		}
		rows := 1 + i%4
		g := &model.ExpertGroup{Expert: i, Rows: make([]int32, rows), In: make([]float32, rows*w.Dim), Out: make([]float32, rows*w.Dim)}
		for k := range g.In {
			g.In[k] = float32(r.NormFloat64())
		}
		ref := make([]float32, rows*w.Dim)
		alone, _ := New(w, router.ExpertID{Layer: 1, Index: i}, pool)
		alone.Forward(g.In, rows, ref)
		es, groups, want = append(es, e), append(groups, g), append(want, ref)
	}
	var b Batch
	for range 2 { // the second Run reuses the scratches
		b.Forward(es, groups)
		for i, g := range groups {
			for k := range g.Out {
				if math.Float32bits(g.Out[k]) != math.Float32bits(want[i][k]) {
					t.Fatalf("expert %d: out[%d] = %v, Forward %v", i, k, g.Out[k], want[i][k])
				}
			}
		}
	}
	for i, e := range es {
		if l := e.Load(); l.Calls != 2 || l.Rows != int64(2*len(groups[i].Rows)) {
			t.Errorf("expert %d: load %+v", i, l)
		}
	}
}
