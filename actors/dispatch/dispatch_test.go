package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

func needRemotes(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("protoactor remotes race on grpc's global logger (upstream); multi-node tests run without -race")
	}
}

func sameTokens(t *testing.T, got, want [][]int32) {
	t.Helper()
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("prompt %d: tokens %v, want %v", i, got[i], want[i])
		}
	}
}

// TestParity: greedy tokens for the same prompts, decoded together by the
// engine, are identical on 1, 2 and 3 nodes and to a plain runner with
// in-process experts.
func TestParity(t *testing.T) {
	w := loadModel(t, "tiny")
	want := reference(t, w)
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			if n > 1 {
				needRemotes(t)
			}
			tn := newNet(t, w, n, netOptions{noFallback: true})
			d := tn.nodes[0].disp
			sameTokens(t, engineTokens(t, w, d), want)
			if got := generate(t, w, tn.pool, prompts[1], d); !slices.Equal(got, want[1]) {
				t.Errorf("runner: tokens %v, want %v", got, want[1])
			}
			st := d.Stats()
			t.Logf("%d nodes: %+v", n, st)
			if st.Fallbacks != 0 || st.Retries != 0 {
				t.Errorf("stats %+v: want no fallback or retry", st)
			}
			if n == 1 && st.Remote != 0 {
				t.Errorf("one node made %d remote calls", st.Remote)
			}
			if n > 1 && (st.Remote == 0 || st.Local == 0) {
				t.Errorf("stats %+v: want both local and remote calls", st)
			}
			if n > 1 && st.Batches == 0 {
				t.Errorf("stats %+v: no batched calls (several groups of a layer go to each other node)", st)
			}
			// Each other node's compute time per call, as its answers
			// report it; a node gone from the cluster is forgotten.
			busy := d.NodeBusy(nil)
			if len(busy) != n-1 {
				t.Errorf("compute times for %d nodes, want %d: %v", len(busy), n-1, busy)
			}
			for i := 1; i < n; i++ {
				node := fmt.Sprintf("n%d", i)
				if l := busy[node]; l.Count == 0 || l.Count > uint64(st.Remote) || l.Sum <= 0 {
					t.Errorf("%s: compute times %+v against %d remote calls", node, l, st.Remote)
				}
			}
			if n > 1 {
				d.NodeBusy(func(node string) bool { return node != "n1" })
				if _, ok := d.NodeBusy(nil)["n1"]; ok {
					t.Errorf("n1 not forgotten")
				}
			}
		})
	}
}

// TestFailover: when a replica's actor is gone, its node is dead, or it
// answers too late, the call is retried on the other replica and the tokens
// do not change; with no replica left, this node computes the expert.
func TestFailover(t *testing.T) {
	needRemotes(t)
	// The node n0 calls first among equal replicas on n1 and n2 (callers
	// spread over replicas by a rendezvous hash): break that one.
	pm := router.NewMap()
	e0 := router.ExpertID{}
	for _, id := range []string{"n1", "n2"} {
		pm.Nodes[id] = router.Node{ID: id, State: router.NodeActive}
		pm.Placement[e0] = append(pm.Placement[e0], router.Replica{Node: id, Ready: true})
	}
	victimID := dispatch.Candidates(pm, e0, "n0", nil, nil)[0].Node
	victim := 1
	if victimID == "n2" {
		victim = 2
	}
	w := loadModel(t, "tiny")
	want := reference(t, w)
	dc := dispatch.DefaultConfig()
	dc.Timeout = 300 * time.Millisecond
	cases := []struct {
		name     string
		rep      int
		fallback bool
		skip     map[string]bool
		break_   func(t *testing.T, tn *testNet)
		check    func(t *testing.T, st dispatch.Stats)
	}{
		{"actors-stopped", 2, false, nil,
			func(t *testing.T, tn *testNet) { tn.nodes[victim].host.Close() },
			func(t *testing.T, st dispatch.Stats) {
				if st.Retries == 0 {
					t.Error("no retry")
				}
			}},
		{"node-killed", 2, false, nil,
			func(t *testing.T, tn *testNet) { tn.nodes[victim].kill() },
			func(t *testing.T, st dispatch.Stats) {
				if st.Retries == 0 {
					t.Error("no retry")
				}
			}},
		{"slow-replica", 2, false, map[string]bool{victimID: true},
			func(t *testing.T, tn *testNet) {
				n1 := tn.nodes[victim]
				for _, id := range tn.fsm.Map().ExpertsOn(n1.id) {
					props := actor.PropsFromFunc(func(c actor.Context) {
						if _, ok := c.Message().(*expert.ComputeRequest); ok {
							time.Sleep(3 * dc.Timeout)
							c.Respond(&expert.ComputeResponse{Error: "too late"})
						}
					})
					if _, err := n1.sys.Root.SpawnNamed(props, expert.Name(id)); err != nil {
						t.Fatal(err)
					}
				}
				tn.markReady(n1.id)
			},
			func(t *testing.T, st dispatch.Stats) {
				if st.Timeouts == 0 || st.Retries == 0 {
					t.Error("no timeout and retry")
				}
			}},
		{"last-resort-local", 1, true, nil,
			func(t *testing.T, tn *testNet) { tn.nodes[1].kill(); tn.nodes[2].kill() },
			func(t *testing.T, st dispatch.Stats) {
				if st.Fallbacks == 0 {
					t.Error("no fallback")
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tn := newNet(t, w, 3, netOptions{replication: c.rep, dc: dc, noFallback: !c.fallback, skipHost: c.skip})
			c.break_(t, tn)
			d := tn.nodes[0].disp
			sameTokens(t, engineTokens(t, w, d), want)
			st := d.Stats()
			t.Logf("%+v", st)
			c.check(t, st)
		})
	}
}

// TestNoReplica: an expert nobody hosts, without fallback weights, fails the
// layer with ErrNoReplica.
func TestNoReplica(t *testing.T) {
	w := loadModel(t, "tiny")
	sys := newSystem()
	defer sys.Shutdown()
	d, err := dispatch.New(dispatch.DefaultConfig(), sys, router.NewMap, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := make([]float32, w.Dim)
	err = d.RunExperts(context.Background(), 0, []model.ExpertGroup{{Expert: 1, Rows: []int32{0}, In: in, Out: make([]float32, w.Dim)}})
	if !errors.Is(err, dispatch.ErrNoReplica) {
		t.Fatalf("err %v, want ErrNoReplica", err)
	}
}

// TestFallbackHolds: a fallback over a partial model file computes only
// the experts it holds; for others, with no replica, the dispatcher fails
// instead of computing on bytes the node does not have.
func TestFallbackHolds(t *testing.T) {
	w := loadModel(t, "tiny")
	sys := newSystem()
	defer sys.Shutdown()
	pool := kernels.NewPool(1)
	defer pool.Close()
	fb := &dispatch.Fallback{W: w, Pool: pool, Holds: func(layer, e int) bool { return e == 0 }}
	d, err := dispatch.New(dispatch.DefaultConfig(), sys, router.NewMap, nil, fb)
	if err != nil {
		t.Fatal(err)
	}
	in := make([]float32, w.Dim)
	for i := range in {
		in[i] = float32(i%7) / 7
	}
	for _, tc := range []struct {
		name   string
		expert int
		want   error
	}{
		{"held", 0, nil},
		{"not held", 1, dispatch.ErrNoReplica},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]float32, w.Dim)
			err := d.RunExperts(context.Background(), 0, []model.ExpertGroup{{Expert: tc.expert, Rows: []int32{0}, In: in, Out: out}})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	if st := d.Stats(); st.Fallbacks != 1 {
		t.Errorf("%d fallbacks, want 1 (the held expert only)", st.Fallbacks)
	}
}

// TestLocalActorByMessage: an expert actor called by message on its own
// actor system gives the bits Expert.Forward gives.
func TestLocalActorByMessage(t *testing.T) {
	w := loadModel(t, "tiny")
	sys := newSystem()
	defer sys.Shutdown()
	pool := kernels.NewPool(2)
	defer pool.Close()
	h := expert.NewHost(sys, w, pool, nil)
	defer h.Close()
	id := router.ExpertID{Layer: 1, Index: 2}
	if err := h.Start(id); err != nil {
		t.Fatal(err)
	}
	rows := 5
	in := make([]float32, rows*w.Dim)
	for i := range in {
		in[i] = float32(i%13)/7 - 0.8
	}
	want := make([]float32, rows*w.Dim)
	var s model.ExpertScratch
	w.FeedForward(1, 2).Forward(pool, &s, in, rows, want)
	res, err := sys.Root.RequestFuture(expert.PID(sys.Address(), id), &expert.ComputeRequest{
		Layer: 1, Expert: 2, Rows: int32(rows), Dim: int32(w.Dim), Activations: expert.AppendFloats(nil, in)}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	resp := res.(*expert.ComputeResponse)
	if resp.Error != "" {
		t.Fatal(resp.Error)
	}
	got := make([]float32, rows*w.Dim)
	if err := expert.DecodeFloats(got, resp.Activations, int(resp.Rows), int(resp.Dim)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatal("actor output differs from Expert.Forward")
	}
	// A request for another expert is refused, not computed.
	res, err = sys.Root.RequestFuture(expert.PID(sys.Address(), id), &expert.ComputeRequest{
		Layer: 0, Expert: 2, Rows: 1, Dim: int32(w.Dim), Activations: expert.AppendFloats(nil, in[:w.Dim])}, 5*time.Second).Result()
	if err != nil || res.(*expert.ComputeResponse).Error == "" {
		t.Fatalf("wrong expert: err %v, response %v", err, res)
	}
}

// TestLargeCall: one expert call of 5 MB of activations (past gRPC's 4 MiB
// default) reaches its remote replica and returns the exact outputs; it
// used to time out on every replica.
func TestLargeCall(t *testing.T) {
	needRemotes(t)
	w := loadModel(t, "tiny")
	dc := dispatch.DefaultConfig()
	dc.Timeout = 5 * time.Second
	tn := newNet(t, w, 2, netOptions{noFallback: true, dc: dc})
	e := onlyOn(t, tn, "n1", 1)[0]
	rows := (5 << 20) / (4 * w.Dim)
	in := make([]float32, rows*w.Dim)
	for i := range in {
		in[i] = float32(i%13)/7 - 0.8
	}
	want := make([]float32, len(in))
	var s model.ExpertScratch
	w.FeedForward(0, e).Forward(tn.pool, &s, in, rows, want)
	g := []model.ExpertGroup{{Expert: e, Rows: make([]int32, rows), In: in, Out: make([]float32, len(in))}}
	if err := tn.nodes[0].disp.RunExperts(context.Background(), 0, g); err != nil {
		t.Fatalf("%d rows (%d KiB) to n1: %v (stats %+v)", rows, len(in)*4>>10, err, tn.nodes[0].disp.Stats())
	}
	if !slices.Equal(g[0].Out, want) {
		t.Error("the outputs differ from the expert's")
	}
	if st := tn.nodes[0].disp.Stats(); st.Remote == 0 || st.Timeouts != 0 {
		t.Errorf("stats %+v: want a remote call and no timeout", st)
	}
}

// vanishing answers LocalVersion once per expert, then "not running", as a
// Host does when a map change stops an expert between two lookups.
type vanishing struct {
	h    *expert.Host
	seen map[router.ExpertID]bool
}

func (v *vanishing) LocalVersion(id router.ExpertID, ver string) (*expert.Expert, bool) {
	if v.seen[id] {
		return nil, false
	}
	v.seen[id] = true
	return v.h.LocalVersion(id, ver)
}

// TestLocalExpertStoppedMidLayer: a local expert found when the layer is
// planned is the one computed, even if it is stopped before the compute
// (the dispatcher looked it up twice, and the second, nil, crashed the
// batch with the other experts' locks held).
func TestLocalExpertStoppedMidLayer(t *testing.T) {
	needRemotes(t)
	w := loadModel(t, "tiny")
	tn := newNet(t, w, 1, netOptions{})
	nd := tn.nodes[0]
	d, err := dispatch.New(dispatch.Config{Self: nd.id, Timeout: time.Second}, nd.sys, tn.fsm.Map,
		&vanishing{h: nd.host, seen: map[router.ExpertID]bool{}}, &dispatch.Fallback{W: w, Pool: tn.pool})
	if err != nil {
		t.Fatal(err)
	}
	var groups []model.ExpertGroup
	var wants [][]float32
	for e := 0; e < w.Experts; e++ {
		in := make([]float32, w.Dim)
		for i := range in {
			in[i] = float32((i+e)%5) / 5
		}
		want := make([]float32, w.Dim)
		var s model.ExpertScratch
		w.FeedForward(0, e).Forward(tn.pool, &s, in, 1, want)
		groups = append(groups, model.ExpertGroup{Expert: e, Rows: []int32{0}, In: in, Out: make([]float32, w.Dim)})
		wants = append(wants, want)
	}
	if err := d.RunExperts(context.Background(), 0, groups); err != nil {
		t.Fatal(err)
	}
	for e, g := range groups {
		if !slices.Equal(g.Out, wants[e]) {
			t.Errorf("expert %d: outputs differ", e)
		}
	}
}

// startRemote starts an actor system with remote on addr.
func startRemote(t *testing.T, addr string) (*actor.ActorSystem, *remote.Remote) {
	sys := newSystem()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	r := remote.NewRemote(sys, remote.Configure(host, p, expert.RemoteOptions(nil, nil)...))
	r.Start()
	return sys, r
}

// TestLateAnswerOfEarlierIncarnation: node A asks B, times out and
// restarts on the same address; B's late answer to the old call reaches
// the new process, whose futures are numbered from the start again. It
// must not fill the new call with the old request's outputs (it did, every
// time, before answers named their call).
func TestLateAnswerOfEarlierIncarnation(t *testing.T) {
	needRemotes(t)
	w := loadModel(t, "tiny")
	pool := kernels.NewPool(2)
	defer pool.Close()
	addrA, addrB := freeAddr(t), freeAddr(t)
	sysB, remB := startRemote(t, addrB)
	defer func() { remB.Shutdown(false); sysB.Shutdown() }()
	hB := expert.NewHost(sysB, w, pool, nil)
	f := hB.EnableFaults()
	id := router.ExpertID{Layer: 0, Index: 0}
	if err := hB.Start(id); err != nil {
		t.Fatal(err)
	}
	_ = f.Set(id, 1500*time.Millisecond)
	m := router.NewMap()
	m.Nodes["A"] = router.Node{ID: "A", ActorAddr: addrA, State: router.NodeActive}
	m.Nodes["B"] = router.Node{ID: "B", ActorAddr: addrB, State: router.NodeActive}
	m.Placement[id] = []router.Replica{{Node: "B", Ready: true}}
	maps := func() *router.Map { return m }
	input := func(seed float32) []float32 {
		in := make([]float32, w.Dim)
		for i := range in {
			in[i] = seed * float32(i%7-3)
		}
		return in
	}
	run := func(timeout time.Duration, in []float32) ([]float32, error) {
		sys, rem := startRemote(t, addrA)
		defer func() { rem.Shutdown(false); sys.Shutdown() }()
		d, _ := dispatch.New(dispatch.Config{Self: "A", Timeout: timeout}, sys, maps, nil, nil)
		out := make([]float32, w.Dim)
		err := d.RunExperts(context.Background(), 0, []model.ExpertGroup{{Expert: 0, Rows: []int32{0}, In: in, Out: out}})
		return out, err
	}
	// A's first incarnation: the call times out, A goes down.
	if _, err := run(300*time.Millisecond, input(1)); err == nil {
		t.Fatal("the first call did not time out")
	}
	// A restarts on the same address and asks again with other rows.
	in2 := input(-2)
	got, err := run(5*time.Second, in2)
	want := make([]float32, w.Dim)
	var s model.ExpertScratch
	w.FeedForward(0, 0).Forward(pool, &s, in2, 1, want)
	old := make([]float32, w.Dim)
	w.FeedForward(0, 0).Forward(pool, &s, input(1), 1, old)
	if err == nil && !slices.Equal(got, want) {
		t.Fatalf("RunExperts succeeded with another request's output (the old call's: %v)", slices.Equal(got, old))
	}
}

// TestAnsweredErrorKeepsNode: a node that answers part of a batch with an
// error of that part (the version is not running there, as during a
// placement move or a hot update) is up: the part goes elsewhere, but its
// other experts are still called there, not suspected away to the fallback
// for SuspectFor.
func TestAnsweredErrorKeepsNode(t *testing.T) {
	needRemotes(t)
	w := loadModel(t, "tiny")
	tn := newNet(t, w, 2, netOptions{})
	onN1 := onlyOn(t, tn, "n1", 2)
	stopped, healthy := onN1[0], onN1[1]
	tn.nodes[1].host.StopVersion(router.ExpertID{Layer: 0, Index: stopped}, router.BaseVersion)
	group := func(e int) model.ExpertGroup {
		in := make([]float32, w.Dim)
		for i := range in {
			in[i] = float32((i+e)%9)/9 - 0.4
		}
		return model.ExpertGroup{Expert: e, Rows: []int32{0}, In: in, Out: make([]float32, w.Dim)}
	}
	d := tn.nodes[0].disp
	// Both in one batch to n1, whose batch actor answers the stopped
	// expert's part with an error (a call to a stopped actor itself is a
	// dead letter, which a dead node gives too).
	if err := d.RunExperts(context.Background(), 0, []model.ExpertGroup{group(stopped), group(healthy)}); err != nil {
		t.Fatal(err) // the fallback computes the stopped one
	}
	if st := d.Stats(); st.Batches == 0 || st.Fallbacks == 0 {
		t.Fatalf("stats %+v: want a batch to n1 and the stopped expert computed by the fallback", st)
	}
	before := d.Stats()
	if err := d.RunExperts(context.Background(), 0, []model.ExpertGroup{group(healthy)}); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.Remote != before.Remote+1 || st.Fallbacks != before.Fallbacks {
		t.Errorf("expert %d on n1 after n1 answered an error for expert %d: remote %d → %d, fallbacks %d → %d; want it called on n1",
			healthy, stopped, before.Remote, st.Remote, before.Fallbacks, st.Fallbacks)
	}
}

// TestNoReplicaErrorNamesTheCause: when every replica failed and no
// fallback may compute the expert, the error says what the last replica
// answered, not only that the expert is not held here.
func TestNoReplicaErrorNamesTheCause(t *testing.T) {
	needRemotes(t)
	w := loadModel(t, "tiny")
	dc := dispatch.DefaultConfig()
	dc.Timeout = 2 * time.Second
	tn := newNet(t, w, 2, netOptions{noFallback: true, dc: dc})
	e := onlyOn(t, tn, "n1", 1)[0]
	tn.nodes[1].host.StopVersion(router.ExpertID{Layer: 0, Index: e}, router.BaseVersion)
	g := []model.ExpertGroup{{Expert: e, Rows: []int32{0}, In: make([]float32, w.Dim), Out: make([]float32, w.Dim)}}
	err := tn.nodes[0].disp.RunExperts(context.Background(), 0, g)
	if !errors.Is(err, dispatch.ErrNoReplica) || !strings.Contains(err.Error(), "the last replica tried (n1) failed") {
		t.Fatalf("RunExperts: %v, want ErrNoReplica naming n1's failure", err)
	}
}

// onlyOn returns the layer-0 experts placed on node alone, failing the test
// unless there are at least n.
func onlyOn(t *testing.T, tn *testNet, node string, n int) []int {
	t.Helper()
	var out []int
	for e := 0; e < tn.w.Experts; e++ {
		if rs := tn.fsm.Map().Placement[router.ExpertID{Layer: 0, Index: e}]; len(rs) == 1 && rs[0].Node == node {
			out = append(out, e)
		}
	}
	if len(out) < n {
		t.Fatalf("layer-0 experts on %s alone: %v, want %d", node, out, n)
	}
	return out
}

// TestLocalRunner: Local computes a layer's groups whose experts this node
// runs, bit-identical to the expert alone, leaves the others' outputs as
// they were, calls no peer and counts nothing.
func TestLocalRunner(t *testing.T) {
	needRemotes(t)
	w := loadModel(t, "tiny")
	tn := newNet(t, w, 2, netOptions{noFallback: true})
	d := tn.nodes[0].disp
	const layer, rows = 1, 3
	m := tn.fsm.Map()
	groups := make([]model.ExpertGroup, w.Experts)
	for e := range groups {
		g := &groups[e]
		g.Expert, g.Rows = e, make([]int32, rows)
		g.In, g.Out = make([]float32, rows*w.Dim), make([]float32, rows*w.Dim)
		for i := range g.In {
			g.In[i] = float32((i+7*e)%11)/5 - 1
		}
		for i := range g.Out {
			g.Out[i] = float32(math.NaN())
		}
	}
	if err := d.Local().RunExperts(context.Background(), layer, groups); err != nil {
		t.Fatal(err)
	}
	local := 0
	for e, g := range groups {
		id := router.ExpertID{Layer: layer, Index: e}
		if slices.ContainsFunc(m.Placement[id], func(r router.Replica) bool { return r.Node == "n0" }) {
			local++
			want := make([]float32, rows*w.Dim)
			var s model.ExpertScratch
			w.FeedForward(layer, e).Forward(tn.pool, &s, g.In, rows, want)
			if !slices.Equal(g.Out, want) {
				t.Errorf("expert %d (on n0): output differs from the expert alone", e)
			}
		} else if !math.IsNaN(float64(g.Out[0])) {
			t.Errorf("expert %d (not on n0): output written", e)
		}
	}
	if local == 0 || local == w.Experts {
		t.Fatalf("n0 hosts %d of %d experts of layer %d: want some, not all", local, w.Experts, layer)
	}
	if st := d.Stats(); st.Local != 0 || st.Remote != 0 || st.Batches != 0 {
		t.Errorf("stats after Local: %+v, want nothing counted", st)
	}
}
