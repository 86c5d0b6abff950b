package cluster

import (
	"testing"

	"github.com/conclave-ai/conclave/router"
)

// belowShare weighs nodes by capacity as Place does: a small node balanced
// for its capacity, or a full one, is not behind; an empty one is.
func TestBelowShare(t *testing.T) {
	const eb = 1 << 20
	mk := func(caps map[string]int64, held map[string]int) *router.Map {
		m := &router.Map{Model: &router.Model{ID: "m", Layers: 8, Experts: 32, ExpertBytes: eb, Live: true},
			Nodes: map[string]router.Node{}, Placement: map[router.ExpertID][]router.Replica{}}
		for id, c := range caps {
			m.Nodes[id] = router.Node{ID: id, State: router.NodeActive, Capacity: c}
		}
		i := 0
		for id, n := range held {
			for range n {
				e := router.ExpertID{Layer: i / 32, Index: i % 32}
				m.Placement[e] = append(m.Placement[e], router.Replica{Node: id, Ready: true})
				i++
			}
		}
		return m
	}
	for _, c := range []struct {
		name string
		caps map[string]int64
		held map[string]int
		want bool
	}{
		{"balanced by capacity", map[string]int64{"a": 100 * eb, "b": 100 * eb, "c": 20 * eb}, map[string]int{"a": 59, "b": 58, "c": 11}, false},
		{"an empty node", map[string]int64{"a": 100 * eb, "b": 100 * eb, "c": 100 * eb}, map[string]int{"a": 64, "b": 64}, true},
		{"a small node full", map[string]int64{"a": 200 * eb, "b": 200 * eb, "c": 4 * eb}, map[string]int{"a": 62, "b": 62, "c": 4}, false},
		{"no limits, one behind", map[string]int64{"a": 0, "b": 0}, map[string]int{"a": 100, "b": 20}, true},
		{"no limits, even", map[string]int64{"a": 0, "b": 0}, map[string]int{"a": 64, "b": 64}, false},
	} {
		if got := belowShare(mk(c.caps, c.held)); got != c.want {
			t.Errorf("%s: belowShare %v, want %v", c.name, got, c.want)
		}
	}
}
