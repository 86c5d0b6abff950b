package expert

import (
	"fmt"
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

// TestForwardConcurrent checks that calls to one expert from several
// goroutines at once (they no longer queue on the expert: each takes its
// own scratch) and a Batch beside them each get the bits of a call alone.
func TestForwardConcurrent(t *testing.T) {
	_, w := testmodel.Load(t, testmodel.Config(t, "tiny", nil))
	pool := kernels.NewPool(2)
	defer pool.Close()
	e, err := New(w, router.ExpertID{Layer: 0, Index: 1}, pool)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(73, 74))
	const callers = 6
	ins, want := make([][]float32, callers), make([][]float32, callers)
	for i := range ins {
		rows := 1 + i
		ins[i] = make([]float32, rows*w.Dim)
		for k := range ins[i] {
			ins[i][k] = float32(r.NormFloat64())
		}
		want[i] = make([]float32, rows*w.Dim)
		e.Forward(ins[i], rows, want[i])
	}
	errs := make(chan error, callers+1)
	check := func(i int, got []float32) error {
		for k := range got {
			if math.Float32bits(got[k]) != math.Float32bits(want[i][k]) {
				return fmt.Errorf("caller %d: out[%d] = %v, alone %v", i, k, got[k], want[i][k])
			}
		}
		return nil
	}
	for i := range callers {
		go func() {
			var err error
			for range 20 {
				out := make([]float32, len(want[i]))
				e.Forward(ins[i], 1+i, out)
				if err = check(i, out); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	go func() {
		var b Batch
		var err error
		for range 20 {
			g := &model.ExpertGroup{Expert: 1, Rows: make([]int32, 3), In: ins[2], Out: make([]float32, len(want[2]))}
			b.Forward([]*Expert{e}, []*model.ExpertGroup{g})
			if err = check(2, g.Out); err != nil {
				break
			}
		}
		errs <- err
	}()
	for range callers + 1 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestScratchListOrder checks that scratches put back are taken again in
// the same order (a Batch's positions keep their scratch, warm and sized
// for them) and that a short list is topped up with new ones.
func TestScratchListOrder(t *testing.T) {
	var l scratchList
	a := l.take(nil, 3)
	if len(a) != 3 || a[0] == a[1] || a[1] == a[2] || a[0] == a[2] {
		t.Fatalf("take 3 from empty: %p", a)
	}
	l.put(a)
	b := l.take(nil, 4)
	for i := range a {
		if b[i] != a[i] {
			t.Fatalf("position %d: got %p, put back %p", i, b[i], a[i])
		}
	}
	if b[3] == nil || b[3] == a[0] || b[3] == a[1] || b[3] == a[2] {
		t.Fatalf("fourth scratch %p is not new", b[3])
	}
	if len(l.free) != 0 {
		t.Fatalf("%d left in the list after taking all", len(l.free))
	}
}

// TestScratchListBounded: the list keeps at most maxFreeScratches, and
// reset (a Host stopping an expert) empties it.
func TestScratchListBounded(t *testing.T) {
	var l scratchList
	l.put(l.take(nil, maxFreeScratches+5))
	if len(l.free) != maxFreeScratches {
		t.Fatalf("%d scratches kept, want at most %d", len(l.free), maxFreeScratches)
	}
	l.reset()
	if len(l.free) != 0 {
		t.Fatalf("%d scratches kept after reset", len(l.free))
	}
}
