package router

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// hotInput is a random input with hot replicas on, skewed loads and a
// current placement that Place itself produced (so base replication is met
// and only the hot rule and rebalancing change anything).
func hotInput(t *testing.T, r *rand.Rand) PlaceInput {
	t.Helper()
	in := randomInput(r, r.IntN(2) == 0)
	in.Load = map[ExpertID]float64{}
	for l := range in.Layers {
		for i := range in.Experts {
			in.Load[ExpertID{l, i}] = float64(r.IntN(4))
		}
		in.Load[ExpertID{l, r.IntN(in.Experts)}] = float64(10 + r.IntN(100)) // a hot one per layer
	}
	in.Current = nil
	res, err := Place(in)
	if err != nil {
		t.Fatal(err)
	}
	in.Current = res.Placement
	in.HotFactor = 1 + float64(r.IntN(4))/2
	in.HotChanges = r.IntN(3)
	in.Rebalance = true
	in.MaxMoves = 1 + r.IntN(2)
	return in
}

// checkHot checks what hot replicas promise: 1..base+1 replicas per expert on
// distinct active nodes within capacity, never fewer than base where
// capacity allows all, at most HotChanges replica-count changes and at most
// MaxMoves new replicas against the current placement.
func checkHot(t *testing.T, in PlaceInput, res PlaceResult) {
	t.Helper()
	nodes := map[string]Node{}
	eligible := 0
	for _, n := range in.Nodes {
		nodes[n.ID] = n
		if n.State == NodeActive {
			eligible++
		}
	}
	base := min(max(in.Replication, 1), eligible)
	used := map[string]int64{}
	changes := 0
	for l := range in.Layers {
		for i := range in.Experts {
			e := ExpertID{l, i}
			rs := res.Placement[e]
			if len(rs) > base+1 || (totalFits(in, base) && len(rs) == 0) {
				t.Errorf("expert %v: %d replicas, base %d", e, len(rs), base)
			}
			if totalFits(in, base) && len(rs) < base {
				t.Errorf("expert %v: %d replicas below base %d", e, len(rs), base)
			}
			if (len(rs) > base) != (len(in.Current[e]) > base) {
				changes++
			}
			seen := map[string]bool{}
			for _, r := range rs {
				if nodes[r.Node].State != NodeActive || seen[r.Node] {
					t.Errorf("expert %v: bad replica %+v", e, r)
				}
				seen[r.Node] = true
				used[r.Node] += in.ExpertBytes
			}
		}
	}
	for id, u := range used {
		if c := nodes[id].Capacity; c > 0 && u > c {
			t.Errorf("node %s over capacity: %d > %d", id, u, c)
		}
	}
	if budget := min(max(in.HotChanges, 1), in.MaxMoves); changes > budget {
		t.Errorf("%d replica-count changes, want <= %d", changes, budget)
	}
	if res.Moves > in.MaxMoves {
		t.Errorf("%d moves, want <= %d", res.Moves, in.MaxMoves)
	}
}

func TestPlaceHotProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for run := range propertyRuns {
		in := hotInput(t, r)
		for round := range 4 {
			res, err := Place(in)
			if err != nil {
				t.Fatal(err)
			}
			// Deterministic whatever the order of the nodes.
			sh := in
			sh.Nodes = slices.Clone(in.Nodes)
			r.Shuffle(len(sh.Nodes), func(i, j int) { sh.Nodes[i], sh.Nodes[j] = sh.Nodes[j], sh.Nodes[i] })
			again, err := Place(sh)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(res, again) {
				t.Fatalf("run %d round %d: node order changed the result", run, round)
			}
			if ok := t.Run(fmt.Sprintf("run%d/round%d", run, round), func(t *testing.T) { checkHot(t, in, res) }); !ok {
				t.Fatalf("input: %+v", in)
			}
			in.Current = res.Placement
		}
	}
}

// Under a steady skew the hot experts gain one replica each, one per round,
// and then placement is stable, with and without rebalancing; when the skew
// goes, they drop back to the base, again one per round.
func TestPlaceHotConverges(t *testing.T) {
	in := PlaceInput{Layers: 2, Experts: 4, ExpertBytes: 1, Replication: 1, HotFactor: 2, Rebalance: true, MaxMoves: 1,
		Load: map[ExpertID]float64{{0, 0}: 100, {1, 0}: 90}}
	for i := range 3 {
		in.Nodes = append(in.Nodes, Node{ID: fmt.Sprintf("n%d", i), State: NodeActive})
	}
	for e := range 8 {
		if id := (ExpertID{e / 4, e % 4}); in.Load[id] == 0 {
			in.Load[id] = 1
		}
	}
	round := func() PlaceResult {
		res, err := Place(in)
		if err != nil {
			t.Fatal(err)
		}
		in.Current = res.Placement
		return res
	}
	in.HotFactor = 0
	round() // base placement
	in.HotFactor = 2
	counts := func() (int, int) { return len(in.Current[ExpertID{0, 0}]), len(in.Current[ExpertID{1, 0}]) }
	round()
	if a, b := counts(); a != 2 || b != 1 {
		t.Fatalf("after one round: replicas %d, %d; want the hottest first (2, 1)", a, b)
	}
	round()
	if a, b := counts(); a != 2 || b != 2 {
		t.Fatalf("after two rounds: replicas %d, %d; want 2, 2", a, b)
	}
	stable := in.Current
	for range 5 {
		if res := round(); res.Moves != 0 || !reflect.DeepEqual(res.Placement, stable) {
			t.Fatalf("not stable: %v", res.Placement)
		}
	}
	in.Rebalance = false
	if res := round(); !reflect.DeepEqual(res.Placement, stable) {
		t.Fatalf("non-rebalancing Place dropped hot replicas: %v", res.Placement)
	}
	in.Rebalance, in.Load = true, nil // uniform: both cold now
	round()
	if a, b := counts(); a+b != 3 {
		t.Fatalf("cooling: replicas %d, %d; want one dropped per round", a, b)
	}
	round()
	if a, b := counts(); a != 1 || b != 1 {
		t.Fatalf("cooled: replicas %d, %d; want 1, 1", a, b)
	}
}

func TestPlaceHotRejectsNonsense(t *testing.T) {
	for _, in := range []PlaceInput{{HotFactor: 0.5}, {HotFactor: -1}, {HotChanges: -1}} {
		if _, err := Place(in); !errors.Is(err, ErrBadPlaceInput) {
			t.Errorf("%+v: err %v, want ErrBadPlaceInput", in, err)
		}
	}
}

func TestReportLoad(t *testing.T) {
	m := NewMap()
	apply := func(c Command) (*Map, error) {
		c.V = CommandVersion
		next, _, err := m.Apply(c)
		if err == nil {
			m = next
		}
		return next, err
	}
	if _, err := apply(Command{Op: OpReportLoad, NodeID: "n0", Load: []ExpertLoad{{ExpertID{0, 0}, 1}}}); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("unknown node: %v", err)
	}
	for _, id := range []string{"n0", "n1"} {
		if _, err := apply(Command{Op: OpUpsertNode, Node: &Node{ID: id, State: NodeActive}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range [][]ExpertLoad{{{ExpertID{0, 0}, -1}}, {{ExpertID{-1, 0}, 1}}, {{ExpertID{0, 0}, 1}, {ExpertID{0, 0}, 2}}} {
		if _, err := apply(Command{Op: OpReportLoad, NodeID: "n0", Load: bad}); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%v: err %v, want ErrBadCommand", bad, err)
		}
	}
	if _, err := apply(Command{Op: OpReportLoad, NodeID: "n0", NowMS: 5, Load: []ExpertLoad{{ExpertID{1, 0}, 2}, {ExpertID{0, 1}, 0}, {ExpertID{0, 0}, 3}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := apply(Command{Op: OpReportLoad, NodeID: "n1", Load: []ExpertLoad{{ExpertID{0, 0}, 1}}}); err != nil {
		t.Fatal(err)
	}
	if got := m.Loads["n0"]; !reflect.DeepEqual(got, NodeLoad{AtMS: 5, Experts: []ExpertLoad{{ExpertID{0, 0}, 3}, {ExpertID{1, 0}, 2}}}) {
		t.Errorf("n0's report %+v: want zero dropped, sorted", got)
	}
	if got := m.ExpertLoads(); !reflect.DeepEqual(got, map[ExpertID]float64{{0, 0}: 4, {1, 0}: 2}) {
		t.Errorf("ExpertLoads %v", got)
	}
	// A dead node's last report no longer counts: its requests stopped.
	dead := m.Clone()
	n1 := dead.Nodes["n1"]
	n1.State = NodeDead
	dead.Nodes["n1"] = n1
	if got := dead.ExpertLoads(); !reflect.DeepEqual(got, map[ExpertID]float64{{0, 0}: 3, {1, 0}: 2}) {
		t.Errorf("ExpertLoads with n1 dead %v", got)
	}
	// The same report again changes nothing; the map survives JSON.
	if _, changed, _ := m.Apply(Command{Op: OpReportLoad, NodeID: "n1", Load: []ExpertLoad{{ExpertID{0, 0}, 1}}}); changed {
		t.Error("identical report changed the map")
	}
	b, err := m.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Map
	if err := back.UnmarshalJSON(b); err != nil || !back.Equal(m) || !back.Clone().Equal(m) {
		t.Fatalf("round trip: %v", err)
	}
	// Removing a node drops its report; an empty report drops one too.
	if _, err := apply(Command{Op: OpRemoveNode, NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Loads["n1"]; ok {
		t.Error("removed node's report kept")
	}
	if _, err := apply(Command{Op: OpReportLoad, NodeID: "n0"}); err != nil || len(m.Loads) != 0 {
		t.Errorf("empty report: err %v, loads %v", err, m.Loads)
	}
}
