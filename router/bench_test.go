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

// Apply of a session touch on a map with 10k sessions and a full placement.
func BenchmarkApplyTouchSession(b *testing.B) {
	in := benchInput()
	res, _ := Place(in)
	m := NewMap()
	for _, n := range in.Nodes {
		m.Nodes[n.ID] = n
	}
	m.Placement = res.Placement
	for i := range 10000 {
		id := fmt.Sprintf("s%d", i)
		m.Sessions[id] = Session{ID: id, Home: "n0", LastUseMS: 1, ExpiresMS: 1000}
	}
	c := Command{V: CommandVersion, Op: OpTouchSession, SessionID: "s42"}
	b.ReportAllocs()
	now := int64(1)
	for b.Loop() {
		now++
		c.NowMS = now
		next, _, err := m.Apply(c)
		if err != nil {
			b.Fatal(err)
		}
		m = next
	}
}
