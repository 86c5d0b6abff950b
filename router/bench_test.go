package router

import (
	"fmt"
	"testing"
)

// A large MoE (48 layers x 128 experts, 2 replicas) on 8 nodes.
func benchInput() PlaceInput {
	in := PlaceInput{Layers: 48, Experts: 128, ExpertBytes: 1 << 20, Replication: 2, Load: map[ExpertID]float64{}}
	for i := range 8 {
		in.Nodes = append(in.Nodes, Node{ID: fmt.Sprintf("n%d", i), State: NodeActive, Capacity: 4 << 30})
	}
	for l := range in.Layers {
		for e := range in.Experts {
			in.Load[ExpertID{l, e}] = float64(1 + (l*7+e*13)%5)
		}
	}
	return in
}

func BenchmarkPlaceFresh(b *testing.B) {
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Place(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlaceLoseNode(b *testing.B) {
	in := benchInput()
	res, _ := Place(in)
	in.Current = res.Placement
	in.Nodes[3].State = NodeDead
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Place(in); err != nil {
			b.Fatal(err)
		}
	}
}

// Apply of a session touch, and of a new session's assignment, on a map
// with a full placement and 10k or MaxSessions sessions: every request of a
// session touches it (at most once per TouchInterval), so these bound how
// many sessions a cluster serves.
func BenchmarkApplySession(b *testing.B) {
	in := benchInput()
	res, _ := Place(in)
	for _, n := range []int{10_000, MaxSessions} {
		m := NewMap()
		for _, nd := range in.Nodes {
			m.Nodes[nd.ID] = nd
		}
		m.Placement = res.Placement
		for i := range n - 1 {
			id := fmt.Sprintf("s%d", i)
			m.Sessions = m.Sessions.Set(Session{ID: id, Home: "n0", LastUseMS: 1, ExpiresMS: 1 << 40})
		}
		b.Run(fmt.Sprintf("touch/%d", n), func(b *testing.B) {
			c := Command{V: CommandVersion, Op: OpTouchSession, SessionID: "s42"}
			b.ReportAllocs()
			now, m := int64(1), m
			for b.Loop() {
				now++
				c.NowMS = now
				next, _, err := m.Apply(c)
				if err != nil {
					b.Fatal(err)
				}
				m = next
			}
		})
		b.Run(fmt.Sprintf("assign/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				c := Command{V: CommandVersion, Op: OpAssignSession, Session: &Session{ID: fmt.Sprintf("new%d", i), ExpiresMS: 1 << 40}, NowMS: 2}
				if _, _, err := m.Apply(c); err != nil { // from the same map: one session over n−1
					b.Fatal(err)
				}
			}
		})
	}
}
