package cluster_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// allReady reports whether every expert of the live model has its wanted
// replicas, all ready.
func allReady(m *router.Map) bool {
	if !fullyPlaced(m) {
		return false
	}
	for _, rs := range m.Placement {
		for _, r := range rs {
			if !r.Ready {
				return false
			}
		}
	}
	return true
}

// TestExpertsServeModel: three nodes with the same model file start expert
// actors for the replicas the map places on them, report them ready, and an
// engine on n0 dispatching through the cluster decodes exactly the tokens a
// single in-process engine decodes — also after a node holding replicas is
// killed, and after the map has moved its experts.
func TestExpertsServeModel(t *testing.T) {
	c, nodes, pool := startHosting(t, nil)
	w0 := nodes[0].w
	var xs []*cluster.Experts
	for _, n := range nodes {
		xs = append(xs, n.x)
	}
	c.WaitAgree(30*time.Second, allReady, "every replica ready")

	prompts := [][]int32{{1, 300, 301, 302}, {1, 17, 42, 99, 100, 7, 8, 9}, {1, 5}}
	run := func(r model.ExpertRunner) [][]int32 {
		ecfg := engine.DefaultConfig()
		ecfg.KVBytes = 16 << 20
		var opts []engine.Option
		if r != nil {
			opts = append(opts, engine.WithExperts(r))
		}
		e, err := engine.New(ecfg, w0, pool, nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var chans []<-chan engine.Event
		for _, p := range prompts {
			ch, err := e.Submit(ctx, engine.Request{Prompt: p, MaxTokens: 10})
			if err != nil {
				t.Fatal(err)
			}
			chans = append(chans, ch)
		}
		out := make([][]int32, len(chans))
		for i, ch := range chans {
			for ev := range ch {
				if ev.Err != nil {
					t.Fatal(ev.Err)
				}
				if ev.HasToken {
					out[i] = append(out[i], ev.Token)
				}
			}
		}
		return out
	}
	want := run(nil)
	check := func(stage string) {
		got := run(xs[0].Runner())
		for i := range want {
			if !slices.Equal(got[i], want[i]) {
				t.Errorf("%s: prompt %d: %v, want %v", stage, i, got[i], want[i])
			}
		}
		t.Logf("%s: %+v", stage, xs[0].Dispatcher().Stats())
	}
	check("3 nodes")
	st := xs[0].Dispatcher().Stats()
	if clustertest.ActorRemotes() && st.Remote == 0 {
		t.Errorf("no remote expert calls: %+v", st)
	}
	// Kill the other node hosting the most experts (placement keeps what
	// it can, so a late joiner may host none).
	m := c.Node(0).Map()
	victim := 1
	if len(m.ExpertsOn("n2")) > len(m.ExpertsOn("n1")) {
		victim = 2
	}
	vid := c.Node(victim).ID()
	if len(xs[victim].Host().Hosted()) == 0 {
		t.Fatalf("%s hosts no expert actor", vid)
	}
	// Its experts have no other replica: until the map moves them, n0
	// computes them from its own weights.
	c.Kill(victim)
	check(vid + " killed")
	if st := xs[0].Dispatcher().Stats(); clustertest.ActorRemotes() && st.Fallbacks == 0 {
		t.Errorf("no fallback after %s died: %+v", vid, st)
	}
	// The leader re-places them on the live nodes, which start and report
	// them; then no call needs the fallback.
	c.WaitAgree(30*time.Second, func(m *router.Map) bool {
		n, ok := m.Node(vid)
		return (!ok || n.State == router.NodeDead) && allReady(m) && len(m.ExpertsOn(vid)) == 0
	}, "the dead node's experts re-placed and ready")
	before := xs[0].Dispatcher().Stats().Fallbacks
	check("re-placed")
	if after := xs[0].Dispatcher().Stats().Fallbacks; clustertest.ActorRemotes() && after != before {
		t.Errorf("%d fallbacks after re-placement", after-before)
	}
}
