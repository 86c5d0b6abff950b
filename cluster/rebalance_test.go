package cluster_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
	"github.com/prometheus/client_golang/prometheus"
)

// TestLiveRebalance: under load concentrated on expert 0 of each layer, the
// nodes' load reports reach the map, the leader gives each hot expert one
// more replica, one per round, and placement is then stable. Every expert
// call made meanwhile, from every node, succeeds with the bits a local
// computation gives, and an engine still decodes the single-node tokens.
func TestLiveRebalance(t *testing.T) {
	c, nodes, pool := startHosting(t, func(cfg *cluster.Config) {
		cfg.Load = cluster.LoadConfig{ReportInterval: 100 * time.Millisecond, HalfLife: 200 * time.Millisecond,
			RebalanceInterval: 400 * time.Millisecond, HotFactor: 2}
	})
	w0 := nodes[0].w
	var xs []*cluster.Experts
	for _, n := range nodes {
		xs = append(xs, n.x)
	}
	before := c.WaitAgree(30*time.Second, allReady, "every replica ready")
	hot := []router.ExpertID{{Layer: 0, Index: 0}, {Layer: 1, Index: 0}}
	replicas := func(m *router.Map) []int {
		var out []int
		for _, e := range hot {
			out = append(out, len(m.Placement[e]))
		}
		return out
	}
	t.Logf("before: hot experts' replicas %v, placement %v", replicas(before), before.PlacementList())

	// Reference outputs of the hot experts for a fixed batch.
	const rows = 6
	in := make([]float32, rows*w0.Dim)
	for i := range in {
		in[i] = float32(i%17)/9 - 0.9
	}
	want := make([][]float32, len(hot))
	var s model.ExpertScratch
	for i, e := range hot {
		want[i] = make([]float32, rows*w0.Dim)
		w0.FeedForward(e.Layer, e.Index).Forward(pool, &s, in, rows, want[i])
	}

	// Skewed load from every node until stopped.
	var calls, bad atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, x := range xs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := x.Runner()
			out := make([]float32, rows*w0.Dim)
			for ctx.Err() == nil {
				for i, e := range hot {
					g := []model.ExpertGroup{{Expert: e.Index, Rows: make([]int32, rows), In: in, Out: out}}
					err := r.RunExperts(ctx, e.Layer, g)
					if errors.Is(err, context.Canceled) {
						return
					}
					calls.Add(1)
					if err != nil || !slices.Equal(out, want[i]) {
						if bad.Add(1) == 1 {
							t.Errorf("expert %v: err %v or wrong output", e, err)
						}
					}
				}
			}
		}()
	}
	stopLoad := func() { cancel(); wg.Wait() }
	defer stopLoad()

	// busy returns each node's expert compute time so far.
	busy := func() []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			for _, l := range x.Host().Loads() {
				out[i] += l.Busy
			}
		}
		return out
	}
	// shares reports each node's share of the compute between two busy
	// snapshots, and the largest share.
	shares := func(a, b []time.Duration) ([]float64, float64) {
		var total time.Duration
		for i := range a {
			total += b[i] - a[i]
		}
		out, top := make([]float64, len(a)), 0.0
		for i := range a {
			out[i] = float64(b[i]-a[i]) / float64(max(total, 1))
			top = max(top, out[i])
		}
		return out, top
	}
	start, startCalls, busy0 := time.Now(), calls.Load(), busy()
	// Before: replication 1, until the leader's first placement change.
	c.WaitMap(0, 60*time.Second, func(m *router.Map) bool { return !reflect.DeepEqual(m.Placement, before.Placement) }, "a first placement change")
	beforeDur, beforeCalls, busy1 := time.Since(start), calls.Load()-startCalls, busy()
	beforeShares, beforeTop := shares(busy0, busy1)
	after := c.WaitAgree(60*time.Second, func(m *router.Map) bool {
		return slices.Equal(replicas(m), []int{2, 2}) && allReadyHot(m)
	}, "hot experts replicated and ready")
	t.Logf("after %v: hot experts' replicas %v, placement %v, cluster load %v", time.Since(start).Round(time.Millisecond),
		replicas(after), after.PlacementList(), after.ExpertLoads())
	t.Logf("expert calls during the changes: %d (%.0f/s)", calls.Load()-startCalls,
		float64(calls.Load()-startCalls)/time.Since(start).Seconds())

	// Stable: the leader's own rule changes nothing more, and the map's
	// placement stays put over further rebalancing rounds.
	in2 := after.PlaceInput(nil)
	in2.Load = map[router.ExpertID]float64{}
	obs := after.ExpertLoads()
	for l := range after.Model.Layers {
		for i := range after.Model.Experts {
			id := router.ExpertID{Layer: l, Index: i}
			in2.Load[id] = obs[id] // 0 where nobody reported, as the leader does
		}
	}
	in2.Rebalance, in2.MaxMoves, in2.HotFactor = true, 1, 2
	res, err := router.Place(in2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Placement, after.Placement) {
		t.Errorf("placement not stable under the rule:\nnow  %v\nnext %v", after.PlacementList(), router.PlacementEntries(res.Placement))
	}
	steadyStart, steadyCalls, busy2 := time.Now(), calls.Load(), busy()
	l := c.Leader()
	seen := 0
	c.WaitMap(l, 30*time.Second, func(m *router.Map) bool {
		if !reflect.DeepEqual(m.Placement, after.Placement) {
			t.Fatalf("placement changed after converging: %v", m.PlacementList())
		}
		if m.Loads["n0"].AtMS > time.Now().Add(-50*time.Millisecond).UnixMilli() {
			seen++ // a fresh report; several rebalancing rounds pass meanwhile
		}
		return time.Since(steadyStart) > 3*400*time.Millisecond && seen > 0
	}, "placement stable across rounds")
	steadyDur, busy3 := time.Since(steadyStart), busy()
	afterShares, afterTop := shares(busy2, busy3)
	t.Logf("before rebalancing: %.0f expert calls/s over %v, compute share per node %.2f (busiest %.0f%%)",
		float64(beforeCalls)/beforeDur.Seconds(), beforeDur.Round(time.Millisecond), beforeShares, 100*beforeTop)
	t.Logf("after: %.0f expert calls/s over %v, compute share per node %.2f (busiest %.0f%%)",
		float64(calls.Load()-steadyCalls)/steadyDur.Seconds(), steadyDur.Round(time.Millisecond), afterShares, 100*afterTop)
	stopLoad()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d expert calls failed or differed", bad.Load(), calls.Load())
	}
	for i, x := range xs {
		t.Logf("n%d dispatcher: %+v", i, x.Dispatcher().Stats())
	}

	// The collector exports a bounded number of series.
	reg := prometheus.NewRegistry()
	reg.MustRegister(xs[0].Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	if limit := 1 + after.Model.Layers + 3*cluster.CollectorTopN; n == 0 || n > limit {
		t.Errorf("collector exported %d series, want 1..%d", n, limit)
	}
	if len(xs[0].Rates()) == 0 {
		t.Error("no local rates")
	}
}

func allReadyHot(m *router.Map) bool {
	for _, rs := range m.Placement {
		for _, r := range rs {
			if !r.Ready {
				return false
			}
		}
	}
	return true
}

// TestIdleRebalanceSpreadsToNewNodes: nodes that join after the model was
// placed on the first one take their share of the experts, one move per
// round, without any load reported (an idle cluster), and no expert keeps
// a second replica at replication 1 once the moves are done.
func TestIdleRebalanceSpreadsToNewNodes(t *testing.T) {
	c, ctx := modelOnOneNode(t, 4, 50*time.Millisecond, 0)
	c.Add()
	c.Add()
	c.WaitActive(30*time.Second, 3)
	m := c.WaitAgree(30*time.Second, func(m *router.Map) bool {
		markReady(ctx, c, m)
		n0, n1, n2 := len(m.ExpertsOn("n0")), len(m.ExpertsOn("n1")), len(m.ExpertsOn("n2"))
		return n1 >= 2 && n2 >= 2 && n0+n1+n2 == 8
	}, "the experts spread over the three nodes, one replica each")
	t.Logf("per node: n0 %d, n1 %d, n2 %d", len(m.ExpertsOn("n0")), len(m.ExpertsOn("n1")), len(m.ExpertsOn("n2")))
}

// TestCatchUpMoves: a node far below its share of the replicas (joined or
// back after the placement) takes several per round (Load.CatchUpMoves),
// not one, until it holds its share.
func TestCatchUpMoves(t *testing.T) {
	c, ctx := modelOnOneNode(t, 8, 200*time.Millisecond, 4)
	c.Add()
	c.WaitActive(30*time.Second, 2)
	last, jump := 0, 0
	c.WaitMap(0, 30*time.Second, func(m *router.Map) bool {
		markReady(ctx, c, m)
		got := len(m.ExpertsOn("n1"))
		jump, last = max(jump, got-last), got
		return got >= 6
	}, "n1 to take its share")
	if jump < 2 {
		t.Errorf("n1 gained at most %d replica per placement, want several per round", jump)
	}
}

// modelOnOneNode starts a one-node cluster (replication 1, rebalancing
// every interval, catchUp moves a round for a node far behind) with a
// model of 2 layers of experts each, all placed on n0, and a context for
// the test's commands.
func modelOnOneNode(t *testing.T, experts int, interval time.Duration, catchUp int) (*clustertest.Cluster, context.Context) {
	t.Helper()
	c := clustertest.New(t, 1, clustertest.Options{Config: func(int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.Replication = 1
		cfg.Load.RebalanceInterval = interval
		cfg.Load.CatchUpMoves = catchUp
		return cfg
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	mod := router.Model{ID: "m", Version: 1, Layers: 2, Experts: experts, TopK: 2, ExpertBytes: 1 << 20, Live: true}
	if err := c.Apply(ctx, router.Command{Op: router.OpSetModel, Model: &mod}); err != nil {
		t.Fatal(err)
	}
	c.WaitAgree(10*time.Second, func(m *router.Map) bool { return len(m.ExpertsOn("n0")) == 2*experts }, "every expert on n0")
	return c, ctx
}

// markReady marks every replica of m ready, as hosts would once loaded:
// nothing reports readiness here (no expert hosts run), and a move's old
// replica is kept beside the new one until then (make before break).
func markReady(ctx context.Context, c *clustertest.Cluster, m *router.Map) {
	for id, rs := range m.Placement {
		for _, r := range rs {
			if !r.Ready {
				c.Apply(ctx, router.Command{Op: router.OpSetReplicaReady, Expert: &id, NodeID: r.Node, Ready: true})
			}
		}
	}
}
