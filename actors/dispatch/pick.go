package dispatch

import (
	"github.com/conclave-ai/conclave/router"
)

// Candidates returns the replicas of e to try, in order: this node's own
// replica first (a call without a network hop), then the other ready
// replicas on serving nodes ordered by the calls already assigned to their
// node in this step (least first; ties keep the map's list order), with
// replicas on suspect nodes (recent failures) last. Replicas that are not
// Ready, or on nodes that are unknown or neither active nor draining, are
// left out. It is pure; assigned and suspect may be nil.
func Candidates(m *router.Map, e router.ExpertID, self string, assigned map[string]int, suspect func(node string) bool) []router.Replica {
	var out []router.Replica
	for _, r := range m.Placement[e] {
		if !r.Ready || !serving(m, r.Node) {
			continue
		}
		out = append(out, r)
	}
	rank := func(r router.Replica) int {
		switch {
		case r.Node == self:
			return 0
		case suspect != nil && suspect(r.Node):
			return 2
		}
		return 1
	}
	// Insertion sort: lists are a handful of replicas and this keeps ties stable.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && less(out[j], out[j-1], rank, assigned); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func less(a, b router.Replica, rank func(router.Replica) int, assigned map[string]int) bool {
	ra, rb := rank(a), rank(b)
	if ra != rb {
		return ra < rb
	}
	return assigned[a.Node] < assigned[b.Node]
}

func serving(m *router.Map, node string) bool {
	n, ok := m.Nodes[node]
	return ok && (n.State == router.NodeActive || n.State == router.NodeDraining)
}
