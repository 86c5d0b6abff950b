package dispatch

import (
	"github.com/conclave-ai/conclave/router"
)

// Candidates returns the replicas of e to try, in order: this node's own
// replica first (a call without a network hop), then the other ready
// replicas on serving nodes ordered by the calls already assigned to their
// node in this step (least first; ties go by a rendezvous hash of self and
// the replica's node, so that different callers spread over an expert's
// replicas while each caller keeps a stable order), with replicas on
// suspect nodes (recent failures) last. Replicas that are not
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
	// Insertion sort: lists are a handful of replicas.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && less(self, out[j], out[j-1], rank, assigned); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func less(self string, a, b router.Replica, rank func(router.Replica) int, assigned map[string]int) bool {
	ra, rb := rank(a), rank(b)
	if ra != rb {
		return ra < rb
	}
	if na, nb := assigned[a.Node], assigned[b.Node]; na != nb {
		return na < nb
	}
	return affinity(self, a.Node) > affinity(self, b.Node)
}

// affinity is the rendezvous (highest random weight) score of caller self
// for a replica on node.
func affinity(self, node string) uint64 {
	x := uint64(14695981039346656037) // FNV-1a over self, 0, node
	for i := 0; i < len(self); i++ {
		x = (x ^ uint64(self[i])) * 1099511628211
	}
	x *= 1099511628211
	for i := 0; i < len(node); i++ {
		x = (x ^ uint64(node[i])) * 1099511628211
	}
	x ^= x >> 33 // murmur3 finaliser: FNV's high bits mix poorly
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

func serving(m *router.Map, node string) bool {
	n, ok := m.Nodes[node]
	return ok && (n.State == router.NodeActive || n.State == router.NodeDraining)
}
