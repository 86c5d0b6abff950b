package dispatch_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/router"
)

func TestCandidates(t *testing.T) {
	e := router.ExpertID{Layer: 1, Index: 3}
	m := router.NewMap()
	for _, id := range []string{"a", "b", "c", "self"} {
		m.Nodes[id] = router.Node{ID: id, State: router.NodeActive}
	}
	m.Nodes["gone"] = router.Node{ID: "gone", State: router.NodeDead}
	m.Placement[e] = []router.Replica{
		{Node: "a", Ready: true}, {Node: "b", Ready: true}, {Node: "gone", Ready: true},
		{Node: "c", Ready: false}, {Node: "self", Ready: true},
	}
	nodes := func(rs []router.Replica) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Node)
		}
		return out
	}
	cases := []struct {
		name     string
		self     string
		assigned map[string]int
		suspect  []string
		want     []string
	}{
		{"self first", "self", map[string]int{"a": 1, "b": 2}, nil, []string{"self", "a", "b"}},
		{"least assigned first", "x", map[string]int{"a": 2, "b": 1}, nil, []string{"self", "b", "a"}},
		{"suspects last", "x", map[string]int{"b": 1}, []string{"a"}, []string{"self", "b", "a"}},
		{"self even if suspect", "self", map[string]int{"a": 1, "b": 2}, []string{"self"}, []string{"self", "a", "b"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := nodes(dispatch.Candidates(m, e, c.self, c.assigned, func(n string) bool { return slices.Contains(c.suspect, n) }))
			if !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
	// Ties: each caller has a stable order of the same three replicas, and
	// callers spread over them (each replica first for a fair share).
	first := map[string]int{}
	const callers = 300
	for i := range callers {
		self := fmt.Sprintf("caller-%d", i)
		got := nodes(dispatch.Candidates(m, e, self, nil, nil))
		again := nodes(dispatch.Candidates(m, e, self, nil, nil))
		if len(got) != 3 || !slices.Equal(got, again) {
			t.Fatalf("%s: %v then %v", self, got, again)
		}
		first[got[0]]++
	}
	for _, n := range []string{"a", "b", "self"} {
		if first[n] < callers/5 {
			t.Errorf("replica on %s first for %d of %d callers: %v", n, first[n], callers, first)
		}
	}
	if got := dispatch.Candidates(m, router.ExpertID{}, "self", nil, nil); len(got) != 0 {
		t.Errorf("unplaced expert: %v", got)
	}
}
