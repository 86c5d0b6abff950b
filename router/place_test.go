package router

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func activeNodes(ids ...string) []Node {
	var out []Node
	for _, id := range ids {
		out = append(out, Node{ID: id, State: NodeActive})
	}
	return out
}

// nodeLoads sums Load (default 1) per node over a placement.
func nodeLoads(p map[ExpertID][]Replica, load map[ExpertID]float64) map[string]float64 {
	out := map[string]float64{}
	for e, rs := range p {
		l, ok := load[e]
		if !ok {
			l = 1
		}
		for _, r := range rs {
			out[r.Node] += l
		}
	}
	return out
}

func TestPlaceTable(t *testing.T) {
	e := func(l, i int) ExpertID { return ExpertID{l, i} }
	cases := []struct {
		name  string
		in    PlaceInput
		check func(t *testing.T, res PlaceResult)
	}{
		{
			name: "fresh placement is balanced",
			in:   PlaceInput{Nodes: activeNodes("a", "b", "c"), Layers: 2, Experts: 6, ExpertBytes: 10},
			check: func(t *testing.T, res PlaceResult) {
				if res.Moves != 12 || len(res.Unplaced) != 0 {
					t.Errorf("moves %d unplaced %v", res.Moves, res.Unplaced)
				}
				for n, l := range nodeLoads(res.Placement, nil) {
					if l != 4 {
						t.Errorf("node %s has %v experts, want 4", n, l)
					}
				}
			},
		},
		{
			name: "new replicas are not ready and sit on the first device",
			in: PlaceInput{Nodes: []Node{{ID: "g", State: NodeActive, Devices: []Device{{Name: "cuda:1"}, {Name: "cpu"}}}},
				Layers: 1, Experts: 1},
			check: func(t *testing.T, res PlaceResult) {
				if got := res.Placement[e(0, 0)]; !reflect.DeepEqual(got, []Replica{{Node: "g", Device: "cuda:1"}}) {
					t.Errorf("got %v", got)
				}
			},
		},
		{
			name: "kept replicas keep readiness; vanished devices reload",
			in: PlaceInput{Nodes: []Node{{ID: "g", State: NodeActive, Devices: []Device{{Name: "cuda:0"}}}}, Layers: 1, Experts: 2,
				Current: map[ExpertID][]Replica{
					e(0, 0): {{Node: "g", Device: "cuda:0", Ready: true}},
					e(0, 1): {{Node: "g", Device: "cuda:5", Ready: true}},
				}},
			check: func(t *testing.T, res PlaceResult) {
				if got := res.Placement[e(0, 0)]; !got[0].Ready {
					t.Errorf("lost readiness: %v", got)
				}
				if got := res.Placement[e(0, 1)]; got[0].Ready || got[0].Device != "cuda:0" {
					t.Errorf("vanished device kept: %v", got)
				}
				if res.Moves != 0 {
					t.Errorf("moves %d", res.Moves)
				}
			},
		},
		{
			name: "non-active nodes get nothing and lose their replicas",
			in: PlaceInput{
				Nodes:  []Node{{ID: "a", State: NodeActive}, {ID: "d", State: NodeDraining}, {ID: "x", State: NodeDead}, {ID: "j", State: NodeJoining}},
				Layers: 1, Experts: 3, Replication: 2,
				Current: map[ExpertID][]Replica{e(0, 0): {{Node: "d", Ready: true}, {Node: "a", Device: "cpu", Ready: true}}},
			},
			check: func(t *testing.T, res PlaceResult) {
				for ex, rs := range res.Placement {
					if len(rs) != 1 || rs[0].Node != "a" {
						t.Errorf("%v: %v", ex, rs)
					}
				}
				if !res.Placement[e(0, 0)][0].Ready || res.Moves != 2 || len(res.Unplaced) != 0 {
					t.Errorf("%+v", res)
				}
			},
		},
		{
			name: "no active node: everything unplaced",
			in:   PlaceInput{Nodes: []Node{{ID: "d", State: NodeDraining}}, Layers: 1, Experts: 2},
			check: func(t *testing.T, res PlaceResult) {
				if len(res.Placement) != 0 || !slices.Equal(res.Unplaced, []ExpertID{e(0, 0), e(0, 1)}) {
					t.Errorf("%+v", res)
				}
			},
		},
		{
			name: "capacity limits and reports unplaced",
			in: PlaceInput{Nodes: []Node{{ID: "a", State: NodeActive, Capacity: 25}, {ID: "b", State: NodeActive, Capacity: 10}},
				Layers: 1, Experts: 4, ExpertBytes: 10},
			check: func(t *testing.T, res PlaceResult) {
				if got := nodeLoads(res.Placement, nil); got["a"] != 2 || got["b"] != 1 {
					t.Errorf("loads %v", got)
				}
				if !slices.Equal(res.Unplaced, []ExpertID{e(0, 3)}) {
					t.Errorf("unplaced %v", res.Unplaced)
				}
			},
		},
		{
			name: "capacity short of replication: every expert once before any twice",
			in: PlaceInput{Nodes: []Node{{ID: "a", State: NodeActive, Capacity: 20}, {ID: "b", State: NodeActive, Capacity: 20},
				{ID: "c", State: NodeActive, Capacity: 20}}, Layers: 1, Experts: 4, ExpertBytes: 10, Replication: 2},
			check: func(t *testing.T, res PlaceResult) {
				if len(res.Placement) != 4 {
					t.Errorf("%d experts placed, want all 4: %v", len(res.Placement), res.Placement)
				}
				twice := 0
				for _, rs := range res.Placement {
					if len(rs) == 2 {
						twice++
					}
				}
				if twice != 2 || len(res.Unplaced) != 2 {
					t.Errorf("%d experts with 2 replicas, unplaced (short) %v; want 2 and 2", twice, res.Unplaced)
				}
			},
		},
		{
			name: "capacity short of one replica each: the rest stays out",
			in: PlaceInput{Nodes: []Node{{ID: "a", State: NodeActive, Capacity: 15}, {ID: "b", State: NodeActive, Capacity: 25}},
				Layers: 2, Experts: 2, ExpertBytes: 10, Replication: 2},
			check: func(t *testing.T, res PlaceResult) {
				if len(res.Placement) != 3 || len(res.Unplaced) != 4 {
					t.Errorf("placement %v unplaced %v; want 3 experts placed once, all 4 short", res.Placement, res.Unplaced)
				}
				if _, ok := res.Placement[e(1, 1)]; ok {
					t.Errorf("expert %v placed with no room left", e(1, 1))
				}
			},
		},
		{
			name: "capacity weights load",
			in: PlaceInput{Nodes: []Node{{ID: "big", State: NodeActive, Capacity: 300}, {ID: "small", State: NodeActive, Capacity: 100}},
				Layers: 1, Experts: 8, ExpertBytes: 1},
			check: func(t *testing.T, res PlaceResult) {
				if got := nodeLoads(res.Placement, nil); got["big"] != 6 || got["small"] != 2 {
					t.Errorf("loads %v", got)
				}
			},
		},
		{
			name: "hot experts spread",
			in: PlaceInput{Nodes: activeNodes("a", "b"), Layers: 1, Experts: 4,
				Load: map[ExpertID]float64{e(0, 0): 10, e(0, 1): 10, e(0, 2): 1, e(0, 3): 1}},
			check: func(t *testing.T, res PlaceResult) {
				if res.Placement[e(0, 0)][0].Node == res.Placement[e(0, 1)][0].Node {
					t.Errorf("hot experts together: %v", res.Placement)
				}
			},
		},
		{
			name: "replication capped at eligible nodes",
			in:   PlaceInput{Nodes: activeNodes("a", "b"), Layers: 1, Experts: 2, Replication: 5},
			check: func(t *testing.T, res PlaceResult) {
				for ex, rs := range res.Placement {
					if len(rs) != 2 {
						t.Errorf("%v: %v", ex, rs)
					}
				}
				if len(res.Unplaced) != 0 {
					t.Errorf("unplaced %v", res.Unplaced)
				}
			},
		},
		{
			name: "lower replication drops the later replicas",
			in: PlaceInput{Nodes: activeNodes("a", "b"), Layers: 1, Experts: 1, Replication: 1,
				Current: map[ExpertID][]Replica{e(0, 0): {{Node: "b", Device: "cpu"}, {Node: "a", Device: "cpu"}}}},
			check: func(t *testing.T, res PlaceResult) {
				if got := res.Placement[e(0, 0)]; len(got) != 1 || got[0].Node != "b" || res.Moves != 0 {
					t.Errorf("%+v", res)
				}
			},
		},
		{
			name: "experts outside the model are dropped",
			in: PlaceInput{Nodes: activeNodes("a"), Layers: 1, Experts: 1,
				Current: map[ExpertID][]Replica{e(0, 0): {{Node: "a", Device: "cpu"}}, e(5, 5): {{Node: "a", Device: "cpu"}}}},
			check: func(t *testing.T, res PlaceResult) {
				if len(res.Placement) != 1 || res.Moves != 0 {
					t.Errorf("%+v", res)
				}
			},
		},
		{
			name: "rebalance moves from heavy to light, bounded",
			in: PlaceInput{Nodes: activeNodes("a", "b", "c"), Layers: 1, Experts: 9, Rebalance: true, MaxMoves: 2,
				Current: func() map[ExpertID][]Replica {
					p := map[ExpertID][]Replica{}
					for i := range 9 {
						p[e(0, i)] = []Replica{{Node: "a", Device: "cpu", Ready: true}}
					}
					return p
				}()},
			check: func(t *testing.T, res PlaceResult) {
				if res.Moves != 2 {
					t.Errorf("moves %d, want 2", res.Moves)
				}
				if got := nodeLoads(res.Placement, nil); got["a"] != 7 || got["b"]+got["c"] != 2 {
					t.Errorf("loads %v", got)
				}
			},
		},
		{
			name: "rebalance leaves a balanced placement alone",
			in: PlaceInput{Nodes: activeNodes("a", "b"), Layers: 1, Experts: 4, Rebalance: true,
				Current: map[ExpertID][]Replica{
					e(0, 0): {{Node: "a", Device: "cpu"}}, e(0, 1): {{Node: "a", Device: "cpu"}},
					e(0, 2): {{Node: "b", Device: "cpu"}}, e(0, 3): {{Node: "b", Device: "cpu"}},
				}},
			check: func(t *testing.T, res PlaceResult) {
				if res.Moves != 0 {
					t.Errorf("moves %d", res.Moves)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Place(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			checkPlacement(t, tc.in, res)
			tc.check(t, res)
		})
	}
}

func TestPlaceRejectsNonsense(t *testing.T) {
	cases := map[string]PlaceInput{
		"negative layers":   {Layers: -1},
		"negative experts":  {Experts: -1},
		"negative bytes":    {ExpertBytes: -1},
		"negative rep":      {Replication: -1},
		"negative moves":    {MaxMoves: -1},
		"ratio below one":   {RebalanceRatio: 0.5},
		"ratio NaN":         {RebalanceRatio: math.NaN()},
		"too many experts":  {Layers: 1 << 13, Experts: 1 << 13},
		"empty node id":     {Nodes: []Node{{State: NodeActive}}},
		"duplicate node id": {Nodes: activeNodes("a", "a")},
		"negative load":     {Load: map[ExpertID]float64{{0, 0}: -1}},
		"infinite load":     {Load: map[ExpertID]float64{{0, 0}: math.Inf(1)}},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Place(in); !errors.Is(err, ErrBadPlaceInput) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// checkPlacement asserts Place's invariants for any input.
func checkPlacement(t *testing.T, in PlaceInput, res PlaceResult) {
	t.Helper()
	nodes := map[string]Node{}
	eligible := 0
	for _, n := range in.Nodes {
		nodes[n.ID] = n
		if n.State == NodeActive {
			eligible++
		}
	}
	want := min(max(in.Replication, 1), eligible)
	used := map[string]int64{}
	for e, rs := range res.Placement {
		if e.Layer < 0 || e.Layer >= in.Layers || e.Index < 0 || e.Index >= in.Experts {
			t.Errorf("expert %v outside the model", e)
		}
		if len(rs) == 0 || len(rs) > want {
			t.Errorf("expert %v has %d replicas, want 1..%d", e, len(rs), want)
		}
		seen := map[string]bool{}
		for _, r := range rs {
			n, ok := nodes[r.Node]
			if !ok || n.State != NodeActive {
				t.Errorf("expert %v on non-active node %q", e, r.Node)
			}
			if seen[r.Node] {
				t.Errorf("expert %v twice on %q", e, r.Node)
			}
			seen[r.Node] = true
			used[r.Node] += in.ExpertBytes
			devOK := len(n.Devices) == 0 && r.Device == "cpu" ||
				slices.ContainsFunc(n.Devices, func(d Device) bool { return d.Name == r.Device })
			if !devOK {
				t.Errorf("expert %v on unknown device %q of %q", e, r.Device, r.Node)
			}
		}
	}
	for id, u := range used {
		if c := nodes[id].Capacity; c > 0 && u > c {
			t.Errorf("node %s over capacity: %d > %d", id, u, c)
		}
	}
	var unplaced []ExpertID
	for l := range in.Layers {
		for i := range in.Experts {
			e := ExpertID{l, i}
			if n := len(res.Placement[e]); n == 0 || n < want {
				unplaced = append(unplaced, e)
			}
		}
	}
	if !slices.Equal(unplaced, res.Unplaced) {
		t.Errorf("Unplaced = %v, want %v", res.Unplaced, unplaced)
	}
	if totalFits(in, want) && len(res.Unplaced) > 0 {
		t.Errorf("capacity allows all, yet unplaced %v", res.Unplaced)
	}
	if want > 0 && onceFits(in) && len(res.Placement) != in.Layers*in.Experts {
		t.Errorf("capacity holds one replica of every expert, yet only %d of %d are placed", len(res.Placement), in.Layers*in.Experts)
	}
}

// onceFits reports whether the active nodes together have room for one
// replica of every expert.
func onceFits(in PlaceInput) bool {
	slots := 0
	for _, n := range in.Nodes {
		switch {
		case n.State != NodeActive:
		case n.Capacity <= 0 || in.ExpertBytes == 0:
			return true
		default:
			slots += int(n.Capacity / in.ExpertBytes)
		}
	}
	return slots >= in.Layers*in.Experts
}

// totalFits reports whether every active node could hold one replica of every
// expert, so capacity can never block placement.
func totalFits(in PlaceInput, want int) bool {
	if want == 0 {
		return false
	}
	for _, n := range in.Nodes {
		if n.State == NodeActive && n.Capacity > 0 && n.Capacity < int64(in.Layers*in.Experts)*in.ExpertBytes {
			return false
		}
	}
	return true
}

// randomInput builds a random but valid input. ample makes every capacity
// large enough that nothing is ever unplaced.
func randomInput(r *rand.Rand, ample bool) PlaceInput {
	in := PlaceInput{
		Layers:      1 + r.IntN(4),
		Experts:     1 + r.IntN(12),
		ExpertBytes: int64(1 + r.IntN(100)),
		Replication: r.IntN(4),
	}
	states := []NodeState{NodeActive, NodeActive, NodeActive, NodeActive, NodeDraining, NodeDead, NodeJoining}
	for i := range 1 + r.IntN(8) {
		n := Node{ID: fmt.Sprintf("n%02d", r.IntN(100)*100+i), State: states[r.IntN(len(states))]}
		switch {
		case ample || r.IntN(3) == 0:
			n.Capacity = 0
		default:
			n.Capacity = int64(r.IntN(in.Layers*in.Experts+1)) * in.ExpertBytes
		}
		if r.IntN(2) == 0 {
			n.Devices = []Device{{Name: fmt.Sprintf("cuda:%d", r.IntN(2))}, {Name: "cpu"}}
		}
		in.Nodes = append(in.Nodes, n)
	}
	if r.IntN(2) == 0 {
		in.Load = map[ExpertID]float64{}
		for l := range in.Layers {
			for i := range in.Experts {
				if r.IntN(4) != 0 {
					in.Load[ExpertID{l, i}] = float64(r.IntN(20)) / 4
				}
			}
		}
	}
	if r.IntN(2) == 0 { // a stale current placement, possibly nonsensical
		in.Current = map[ExpertID][]Replica{}
		for range r.IntN(in.Layers * in.Experts * 2) {
			e := ExpertID{r.IntN(in.Layers + 1), r.IntN(in.Experts + 1)}
			in.Current[e] = append(in.Current[e], Replica{
				Node: in.Nodes[r.IntN(len(in.Nodes))].ID, Device: "cpu", Ready: r.IntN(2) == 0,
			})
		}
	}
	return in
}

const propertyRuns = 2000

func TestPlaceProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for run := range propertyRuns {
		in := randomInput(r, run%2 == 0)
		in.Rebalance = r.IntN(3) == 0
		current := maps.Clone(in.Current)
		for e, rs := range current {
			current[e] = slices.Clone(rs)
		}
		res, err := Place(in)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if !reflect.DeepEqual(current, in.Current) {
			t.Fatalf("run %d: Place modified its input", run)
		}
		ok := t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) { checkPlacement(t, in, res) })
		if !ok {
			t.Fatalf("input: %+v", in)
		}
	}
}

// Re-running Place on its own output moves nothing.
func TestPlaceStable(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for run := range propertyRuns {
		in := randomInput(r, run%2 == 0)
		res, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		in.Current = res.Placement
		again, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		if again.Moves != 0 || !reflect.DeepEqual(again.Placement, res.Placement) {
			t.Fatalf("run %d: second Place moved %d\nfirst  %v\nsecond %v", run, again.Moves, res.Placement, again.Placement)
		}
	}
}

// Adding a node moves nothing, unless rebalancing, and then at most MaxMoves.
func TestPlaceAddNode(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	tested := 0
	for run := 0; run < propertyRuns; run++ {
		in := randomInput(r, run%2 == 0)
		res, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		eligible := len(slices.DeleteFunc(slices.Clone(in.Nodes), func(n Node) bool { return n.State != NodeActive }))
		if len(res.Unplaced) > 0 || max(in.Replication, 1) > eligible {
			continue // the new node would legitimately take what was missing
		}
		in.Current = res.Placement
		in.Nodes = append(slices.Clone(in.Nodes), Node{ID: "zz-new", State: NodeActive})
		grown, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		if grown.Moves != 0 {
			t.Fatalf("run %d: adding a node moved %d", run, grown.Moves)
		}
		in.Rebalance, in.MaxMoves = true, 1+r.IntN(4)
		rebalanced, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		checkPlacement(t, in, rebalanced)
		if rebalanced.Moves > in.MaxMoves {
			t.Fatalf("run %d: rebalance moved %d > %d", run, rebalanced.Moves, in.MaxMoves)
		}
		tested++
	}
	if tested < propertyRuns/4 {
		t.Fatalf("only %d runs qualified", tested)
	}
}

// Losing a node moves exactly the replicas it held, when capacity allows,
// and everything else stays where it was, readiness included.
func TestPlaceLoseNode(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	tested := 0
	for run := 0; run < propertyRuns; run++ {
		in := randomInput(r, true)
		var active []string
		for _, n := range in.Nodes {
			if n.State == NodeActive {
				active = append(active, n.ID)
			}
		}
		if len(active) < 2 || max(in.Replication, 1) > len(active)-1 {
			continue
		}
		res, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		for e, rs := range res.Placement { // pretend some replicas loaded
			for i := range rs {
				rs[i].Ready = (e.Index+i)%2 == 0
			}
		}
		lost := active[r.IntN(len(active))]
		held := 0
		for _, rs := range res.Placement {
			for _, rep := range rs {
				if rep.Node == lost {
					held++
				}
			}
		}
		in.Current = res.Placement
		in.Nodes = slices.Clone(in.Nodes)
		for i := range in.Nodes {
			if in.Nodes[i].ID == lost {
				in.Nodes[i].State = []NodeState{NodeDead, NodeDraining}[r.IntN(2)]
			}
		}
		after, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		checkPlacement(t, in, after)
		if after.Moves != held {
			t.Fatalf("run %d: lost %s holding %d, moved %d", run, lost, held, after.Moves)
		}
		for e, rs := range res.Placement {
			for _, rep := range rs {
				if rep.Node != lost && !slices.Contains(after.Placement[e], rep) {
					t.Fatalf("run %d: replica %v of %v moved or changed", run, rep, e)
				}
			}
		}
		tested++
	}
	if tested < propertyRuns/4 {
		t.Fatalf("only %d runs qualified", tested)
	}
}

// Same input, same output, whatever the order of nodes and map insertion.
func TestPlaceDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for run := range propertyRuns {
		in := randomInput(r, run%2 == 0)
		in.Rebalance = run%3 == 0
		a, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		shuffled := in
		shuffled.Nodes = slices.Clone(in.Nodes)
		r.Shuffle(len(shuffled.Nodes), func(i, j int) { shuffled.Nodes[i], shuffled.Nodes[j] = shuffled.Nodes[j], shuffled.Nodes[i] })
		shuffled.Load = maps.Clone(in.Load)
		shuffled.Current = map[ExpertID][]Replica{}
		keys := slices.Collect(maps.Keys(in.Current))
		r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		for _, k := range keys {
			shuffled.Current[k] = slices.Clone(in.Current[k])
		}
		b, err := Place(shuffled)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("run %d: results differ\n%+v\n%+v", run, a, b)
		}
	}
}

// Rebalancing repeatedly converges to a bounded max/min ratio on uniform nodes.
func TestPlaceRebalanceConverges(t *testing.T) {
	in := PlaceInput{Nodes: activeNodes("a", "b", "c", "d"), Layers: 4, Experts: 16, Rebalance: true,
		Load: map[ExpertID]float64{}}
	r := rand.New(rand.NewPCG(11, 12))
	for l := range 4 {
		for i := range 16 {
			in.Load[ExpertID{l, i}] = 0.5 + r.Float64()
		}
	}
	in.Current = map[ExpertID][]Replica{}
	for e := range in.Load {
		in.Current[e] = []Replica{{Node: "a", Device: "cpu"}}
	}
	for range 50 {
		res, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		if res.Moves > len(in.Nodes) {
			t.Fatalf("moved %d in one step", res.Moves)
		}
		in.Current = res.Placement
	}
	loads := nodeLoads(in.Current, in.Load)
	lo, hi := math.Inf(1), 0.0
	for _, l := range loads {
		lo, hi = min(lo, l), max(hi, l)
	}
	if len(loads) != 4 || hi > lo*DefaultRebalanceRatio {
		t.Errorf("not balanced: %v", loads)
	}
}

func TestMapPlaceInput(t *testing.T) {
	m := fixtureMap(t)
	in := m.PlaceInput(nil)
	if in.Layers != 1 || in.Experts != 2 || in.ExpertBytes != 100 || in.Replication != 1 || len(in.Nodes) != 3 {
		t.Fatalf("%+v", in)
	}
	res, err := Place(in)
	if err != nil {
		t.Fatal(err)
	}
	// c is draining: e00's replica there goes, a's ready one stays.
	if got := res.Placement[ExpertID{0, 0}]; len(got) != 1 || got[0].Node != "a" || !got[0].Ready || res.Moves != 0 {
		t.Errorf("%+v", res)
	}
	next, changed, err := m.Apply(Command{V: CommandVersion, Op: OpSetPlacement, Placement: PlacementEntries(res.Placement)})
	if err != nil || !changed || len(next.ExpertsOn("c")) != 0 {
		t.Errorf("apply placement: %v %v %v", err, changed, next.PlacementList())
	}
}

// randomPlaceInput draws a small cluster: nodes of every state and
// capacities from none to five experts, loads and a hot factor or not, and
// a current placement with random replicas (some on nodes no longer
// active).
func randomPlaceInput(r *rand.Rand) PlaceInput {
	in := PlaceInput{Layers: 1 + r.IntN(3), Experts: 1 + r.IntN(5), ExpertBytes: 100, Replication: 1 + r.IntN(3)}
	nn := 1 + r.IntN(5)
	states := []NodeState{NodeActive, NodeActive, NodeActive, NodeDraining, NodeDead, NodeJoining}
	for i := 0; i < nn; i++ {
		n := Node{ID: fmt.Sprint("n", i), State: states[r.IntN(len(states))], Capacity: int64(r.IntN(6)) * 100, Devices: []Device{{Name: "cpu"}}}
		in.Nodes = append(in.Nodes, n)
	}
	if r.IntN(2) == 0 {
		in.Load = map[ExpertID]float64{}
		for l := 0; l < in.Layers; l++ {
			for i := 0; i < in.Experts; i++ {
				in.Load[ExpertID{l, i}] = float64(r.IntN(10))
			}
		}
	}
	if r.IntN(2) == 0 {
		in.HotFactor = 1.5
	}
	in.Current = map[ExpertID][]Replica{}
	for l := 0; l < in.Layers; l++ {
		for i := 0; i < in.Experts; i++ {
			var rs []Replica
			for _, n := range in.Nodes {
				if r.IntN(3) == 0 {
					rs = append(rs, Replica{Node: n.ID, Device: "cpu", Ready: r.IntN(2) == 0})
				}
			}
			if len(rs) > 0 {
				in.Current[ExpertID{l, i}] = rs
			}
		}
	}
	return in
}

// checkPlace checks a placement's invariants: no expert twice on a node,
// replicas only on active nodes, no node over its capacity.
func checkPlace(t *testing.T, in PlaceInput, res PlaceResult, tag string) {
	used := map[string]int64{}
	for e, rs := range res.Placement {
		seen := map[string]bool{}
		for _, rp := range rs {
			if seen[rp.Node] {
				t.Fatalf("%s: dup replica %v %v", tag, e, rs)
			}
			seen[rp.Node] = true
			used[rp.Node] += in.ExpertBytes
			i := slices.IndexFunc(in.Nodes, func(n Node) bool { return n.ID == rp.Node })
			if i < 0 || in.Nodes[i].State != NodeActive {
				t.Fatalf("%s: replica of %v on non-active %s", tag, e, rp.Node)
			}
		}
	}
	for _, n := range in.Nodes {
		if n.Capacity > 0 && used[n.ID] > n.Capacity {
			t.Fatalf("%s: node %s capacity %d used %d\nin=%+v\nres=%+v", tag, n.ID, n.Capacity, used[n.ID], in, res.Placement)
		}
	}
}

// TestPlaceRandomInvariants: 20,000 random inputs, with and without
// rebalancing: the invariants hold, the node order does not matter, and
// every expert is placed when there are slots for all.
func TestPlaceRandomInvariants(t *testing.T) {
	for seed := int64(0); seed < 20000; seed++ {
		r := rand.New(rand.NewPCG(uint64(seed), 0))
		in := randomPlaceInput(r)
		in.Rebalance = r.IntN(2) == 0
		res, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		checkPlace(t, in, res, fmt.Sprint("seed ", seed))
		// order independence
		in2 := in
		in2.Nodes = slices.Clone(in.Nodes)
		r.Shuffle(len(in2.Nodes), func(i, j int) { in2.Nodes[i], in2.Nodes[j] = in2.Nodes[j], in2.Nodes[i] })
		res2, _ := Place(in2)
		if !reflect.DeepEqual(res.Placement, res2.Placement) {
			t.Fatalf("seed %d: node order changes placement", seed)
		}
		slots, unl := int64(0), false
		for _, n := range in.Nodes {
			if n.State != NodeActive {
				continue
			}
			if n.Capacity <= 0 {
				unl = true
			}
			slots += n.Capacity / in.ExpertBytes
		}
		if (unl || slots >= int64(in.Layers*in.Experts)) && len(res.Placement) != in.Layers*in.Experts && slots > 0 {
			t.Fatalf("seed %d: %d slots but only %d of %d experts placed: %v", seed, slots, len(res.Placement), in.Layers*in.Experts, res.Placement)
		}
	}
}

// TestRebalanceFillsMissing: a rebalancing placement leaves no replica
// missing that placing again would add (a move can free the room one
// needs).
func TestRebalanceFillsMissing(t *testing.T) {
	bad := 0
	for seed := int64(0); seed < 20000; seed++ {
		r := rand.New(rand.NewPCG(uint64(seed), 0))
		in := randomPlaceInput(r)
		in.Rebalance = true
		res, _ := Place(in)
		in3 := in
		in3.Rebalance = false
		in3.Current = res.Placement
		res3, _ := Place(in3)
		n1, n3 := 0, 0
		for _, rs := range res.Placement {
			n1 += len(rs)
		}
		for _, rs := range res3.Placement {
			n3 += len(rs)
		}
		if n3 > n1 {
			bad++
			if bad < 3 {
				t.Logf("seed %d: %d replicas after rebalance, %d when placed again", seed, n1, n3)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d seeds", bad)
	}
}

// TestPlaceInputServing: a node that runs another model than the live one
// takes no part in placement (its replicas go elsewhere); a node running
// the live model, or none yet, does.
func TestPlaceInputServing(t *testing.T) {
	m := fixtureMap(t)
	live := m.Model.Digest
	m.Nodes = maps.Clone(m.Nodes)
	for id, serving := range map[string]string{"a": "another-digest", "b": live} {
		n := m.Nodes[id]
		n.Serving = serving
		m.Nodes[id] = n
	}
	in := m.PlaceInput(nil)
	var ids []string
	for _, n := range in.Nodes {
		ids = append(ids, n.ID)
	}
	if slices.Contains(ids, "a") || !slices.Contains(ids, "b") {
		t.Fatalf("placement nodes %v: want b (runs the live model) and not a (runs another)", ids)
	}
	res, err := Place(in)
	if err != nil {
		t.Fatal(err)
	}
	for e, rs := range res.Placement {
		for _, r := range rs {
			if r.Node == "a" {
				t.Errorf("%v placed on a, which runs another model", e)
			}
		}
	}
}

// TestSessionHomeRunsLive: sessions are homed only on nodes that can serve
// the live model; a session whose home runs another model moves.
func TestSessionHomeRunsLive(t *testing.T) {
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	m := NewMap()
	for _, c := range []Command{
		{Op: OpUpsertNode, Node: &Node{ID: "old", State: NodeActive, Serving: a}},
		{Op: OpUpsertNode, Node: &Node{ID: "new", State: NodeActive, Serving: b}},
		{Op: OpSetModel, Model: &Model{ID: "A", Digest: a, Layers: 1, Experts: 2, TopK: 1, Live: true}},
		{Op: OpAssignSession, Session: &Session{ID: "kept", Home: "old"}},
		{Op: OpSetModel, Model: &Model{ID: "B", Digest: b, Layers: 1, Experts: 2, TopK: 1, Live: true}},
	} {
		c.V = CommandVersion
		next, _, err := m.Apply(c)
		if err != nil {
			t.Fatal(err)
		}
		m = next
	}
	for i := range 20 {
		if h, _ := ChooseHome(m, fmt.Sprintf("sess-%d", i)); h != "new" {
			t.Errorf("sess-%d homed on %q, which runs another model than the live one", i, h)
		}
	}
	if h, _ := ChooseHome(m, "kept"); h != "new" {
		t.Errorf("a session whose home runs another model stays on %q", h)
	}
}
