package dispatch_test

import (
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
		{"self first, then list order", "self", nil, nil, []string{"self", "a", "b"}},
		{"another node's view", "x", nil, nil, []string{"a", "b", "self"}},
		{"least assigned first", "x", map[string]int{"a": 2, "b": 1}, nil, []string{"self", "b", "a"}},
		{"ties keep list order", "x", map[string]int{"a": 1, "b": 1, "self": 1}, nil, []string{"a", "b", "self"}},
		{"suspects last", "x", nil, []string{"a"}, []string{"b", "self", "a"}},
		{"self even if suspect", "self", nil, []string{"self"}, []string{"self", "a", "b"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := nodes(dispatch.Candidates(m, e, c.self, c.assigned, func(n string) bool { return slices.Contains(c.suspect, n) }))
			if !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
	if got := dispatch.Candidates(m, router.ExpertID{}, "self", nil, nil); len(got) != 0 {
		t.Errorf("unplaced expert: %v", got)
	}
}
