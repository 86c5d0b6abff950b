package router_test

import (
	"fmt"

	"github.com/conclave-ai/conclave/router"
)

// Commands change the map through the FSM; in a cluster they arrive as Raft
// log entries (FSM.Apply), here they are applied directly.
func ExampleFSM() {
	f := router.NewFSM()
	for _, c := range []router.Command{
		{V: router.CommandVersion, Op: router.OpUpsertNode, Node: &router.Node{ID: "n1", State: router.NodeActive}},
		{V: router.CommandVersion, Op: router.OpUpsertNode, Node: &router.Node{ID: "n2", State: router.NodeActive}},
		{V: router.CommandVersion, Op: router.OpAssignSession, Session: &router.Session{ID: "chat-1", Home: "n2", ExpiresMS: 60_000}, NowMS: 1_000},
		{V: router.CommandVersion, Op: router.OpRemoveNode, NodeID: "n9"},
	} {
		if err := f.ApplyCommand(c); err != nil {
			fmt.Println("error:", err)
		}
	}
	m := f.Map()
	fmt.Println("epoch", m.Epoch, "active", len(m.ActiveNodes()), "sessions on n2", m.SessionsOn("n2"))
	// Output:
	// error: remove_node: router: unknown node "n9"
	// epoch 3 active 2 sessions on n2 [chat-1]
}

// Place spreads experts over active nodes; re-placing after a node is lost
// moves only what it held.
func ExamplePlace() {
	nodes := []router.Node{
		{ID: "a", State: router.NodeActive, Devices: []router.Device{{Name: "cuda:0"}}},
		{ID: "b", State: router.NodeActive},
		{ID: "c", State: router.NodeActive},
	}
	in := router.PlaceInput{Nodes: nodes, Layers: 1, Experts: 4, ExpertBytes: 1 << 20, Replication: 2}
	res, _ := router.Place(in)
	fmt.Println("moves", res.Moves, "expert 0:", res.Placement[router.ExpertID{Layer: 0, Index: 0}])

	in.Current = res.Placement
	in.Nodes[2].State = router.NodeDead
	res, _ = router.Place(in)
	fmt.Println("moves after losing c:", res.Moves, "unplaced:", len(res.Unplaced))
	// Output:
	// moves 8 expert 0: [{a cuda:0 false false} {b cpu false false}]
	// moves after losing c: 2 unplaced: 0
}

// ChooseHome keeps a session on its home while that node is active.
func ExampleChooseHome() {
	m := router.NewMap()
	m.Nodes["a"] = router.Node{ID: "a", State: router.NodeActive}
	m.Nodes["b"] = router.Node{ID: "b", State: router.NodeActive}
	m.Sessions = m.Sessions.Set(router.Session{ID: "s", Home: "b"})
	home, ok := router.ChooseHome(m, "s")
	fmt.Println(home, ok)
	newHome, _ := router.ChooseHome(m, "t") // a has fewer sessions
	fmt.Println(newHome)
	// Output:
	// b true
	// a
}
