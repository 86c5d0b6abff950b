package dispatch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

// testGroup is one row for expert e, its input made from e.
func testGroup(dim, e int) []model.ExpertGroup {
	in := make([]float32, dim)
	for i := range in {
		in[i] = float32((i*7+e)%11)/11 - 0.5
	}
	return []model.ExpertGroup{{Expert: e, Rows: []int32{0}, In: in, Out: make([]float32, dim)}}
}

// TestSuspectKeptForUnloadedVersion: a suspect replica is skipped only when
// this node can compute the expert itself. For a hot-updated live version
// the fallback's base weights cannot: the suspect replica, up, was dropped
// and the layer failed with no replica.
func TestSuspectKeptForUnloadedVersion(t *testing.T) {
	needRemotes(t)
	w := loadModel(t, "tiny")
	_, w2 := testmodel.Load(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.Seed = 99 }))
	pool := kernels.NewPool(2)
	defer pool.Close()
	addrA, addrB := freeAddr(t), freeAddr(t)
	sysA, remA := startRemote(t, addrA)
	defer func() { remA.Shutdown(false); sysA.Shutdown() }()
	sysB, remB := startRemote(t, addrB)
	defer func() { remB.Shutdown(false); sysB.Shutdown() }()
	v2 := strings.Repeat("ab", 32)
	hB := expert.NewHost(sysB, w, pool, nil)
	defer hB.Close()
	hB.SetVersionSource(func(id router.ExpertID, v string) (*model.Expert, error) {
		return w2.FeedForward(id.Layer, id.Index), nil
	})
	upd, gone := router.ExpertID{Layer: 0, Index: 1}, router.ExpertID{Layer: 0, Index: 2}
	if err := hB.SyncVersions(map[router.ExpertID][]string{upd: {v2}}); err != nil {
		t.Fatal(err)
	}
	m := router.NewMap()
	m.Nodes["A"] = router.Node{ID: "A", ActorAddr: addrA, State: router.NodeActive}
	m.Nodes["B"] = router.Node{ID: "B", ActorAddr: addrB, State: router.NodeActive}
	m.Placement[upd] = []router.Replica{{Node: "B", Ready: true}}
	m.Placement[gone] = []router.Replica{{Node: "B", Ready: true}} // no actor runs it on B
	m.ExpertVersions = map[router.ExpertID]router.ExpertVersion{upd: {Live: v2}}
	fb := &dispatch.Fallback{W: w, Pool: pool} // base weights, no Versions
	d, err := dispatch.New(dispatch.Config{Self: "A", Timeout: 30 * time.Second, SuspectFor: time.Hour}, sysA, func() *router.Map { return m }, nil, fb)
	if err != nil {
		t.Fatal(err)
	}
	// A dead letter from B makes it suspect; the base expert falls back.
	if err := d.RunExperts(context.Background(), 0, testGroup(w.Dim, gone.Index)); err != nil {
		t.Fatal(err)
	}
	g := testGroup(w.Dim, upd.Index)
	if err := d.RunExperts(context.Background(), 0, g); err != nil {
		t.Fatalf("the updated expert, whose replica on B is up: %v", err)
	}
	want := make([]float32, w.Dim)
	var s model.ExpertScratch
	w2.FeedForward(0, upd.Index).Forward(pool, &s, g[0].In, 1, want)
	if !sameFloats(g[0].Out, want) {
		t.Error("the updated expert's output is not the live version's")
	}
}

// TestMaxAttemptsAfterSelf: this node's own replica, skipped because its
// actor is not running, does not spend one of MaxAttempts; with one attempt
// the replica that was up was never called.
func TestMaxAttemptsAfterSelf(t *testing.T) {
	w := loadModel(t, "tiny")
	pool := kernels.NewPool(2)
	defer pool.Close()
	sys := newSystem()
	defer sys.Shutdown()
	hB := expert.NewHost(sys, w, pool, nil) // node B's actors, in the same system
	defer hB.Close()
	id := router.ExpertID{Layer: 0, Index: 3}
	if err := hB.Start(id); err != nil {
		t.Fatal(err)
	}
	m := router.NewMap()
	m.Nodes["A"] = router.Node{ID: "A", ActorAddr: "a:1", State: router.NodeActive}
	m.Nodes["B"] = router.Node{ID: "B", ActorAddr: sys.Address(), State: router.NodeActive}
	m.Placement[id] = []router.Replica{{Node: "A", Ready: true}, {Node: "B", Ready: true}}
	d, err := dispatch.New(dispatch.Config{Self: "A", Timeout: 30 * time.Second, MaxAttempts: 1}, sys,
		func() *router.Map { return m }, notRunning{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.RunExperts(context.Background(), 0, testGroup(w.Dim, id.Index)); err != nil {
		t.Fatalf("MaxAttempts 1: %v (the replica on B is up)", err)
	}
	if st := d.Stats(); st.Remote != 1 {
		t.Errorf("stats %+v, want one remote call", st)
	}
}

// notRunning is a node's LocalExperts with no actor running.
type notRunning struct{}

func (notRunning) LocalVersion(router.ExpertID, string) (*expert.Expert, bool) { return nil, false }

func sameFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
