package router

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func fixtureMap(t *testing.T) *Map {
	t.Helper()
	f := NewFSM()
	mustApply(t, f, fixture()...)
	return f.Map()
}

func TestCloneIsDeep(t *testing.T) {
	m := fixtureMap(t)
	orig, _ := json.Marshal(m)
	c := m.Clone()
	if !c.Equal(m) || !reflect.DeepEqual(c, m) {
		t.Fatal("clone differs")
	}
	c.Epoch++
	c.Model.Version = 99
	c.Versions[0].ID = "x"
	n := c.Nodes["a"]
	n.Devices[0].Name = "cuda:7"
	c.Nodes["z"] = Node{ID: "z"}
	c.Placement[ExpertID{0, 0}][0].Ready = false
	c.Placement[ExpertID{9, 9}] = []Replica{{Node: "a"}}
	c.Sessions = c.Sessions.Set(Session{ID: "s1", Home: "b"})
	if now, _ := json.Marshal(m); string(now) != string(orig) {
		t.Fatalf("modifying the clone changed the original:\n%s\n%s", orig, now)
	}
}

func TestMapJSONRoundTrip(t *testing.T) {
	m := fixtureMap(t)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"placement":[{"expert":{"layer":0,"index":0}`) {
		t.Errorf("placement not encoded as a list: %s", b)
	}
	var got Map
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, m) {
		t.Errorf("round trip differs:\n%#v\n%#v", &got, m)
	}
	// A value encodes the same as a pointer.
	if b2, _ := json.Marshal(*m); string(b2) != string(b) {
		t.Errorf("value encoding differs:\n%s\n%s", b2, b)
	}
	var empty Map
	if err := json.Unmarshal([]byte(`{}`), &empty); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&empty, NewMap()) {
		t.Errorf("empty map decodes to %#v", empty)
	}
}

func TestMapQueries(t *testing.T) {
	m := fixtureMap(t)
	var ids []string
	for _, n := range m.ActiveNodes() {
		ids = append(ids, n.ID)
	}
	if !slices.Equal(ids, []string{"a", "b"}) {
		t.Errorf("ActiveNodes = %v", ids)
	}
	if got := m.ExpertsOn("a"); !slices.Equal(got, []ExpertID{{0, 0}}) {
		t.Errorf("ExpertsOn(a) = %v", got)
	}
	if got := m.ExpertsOn("nobody"); len(got) != 0 {
		t.Errorf("ExpertsOn(nobody) = %v", got)
	}
	if got := m.SessionsOn("c"); !slices.Equal(got, []string{"s2"}) {
		t.Errorf("SessionsOn(c) = %v", got)
	}
	list := m.PlacementList()
	if len(list) != 2 || list[0].Expert != (ExpertID{0, 0}) || list[1].Expert != (ExpertID{0, 1}) {
		t.Errorf("PlacementList = %v", list)
	}
	list[0].Replicas[0].Node = "changed"
	if m.Placement[ExpertID{0, 0}][0].Node != "a" {
		t.Error("PlacementList shares replica slices")
	}
}

func TestPickReplica(t *testing.T) {
	m := NewMap()
	for id, st := range map[string]NodeState{"act": NodeActive, "act2": NodeActive, "drn": NodeDraining, "dead": NodeDead, "join": NodeJoining} {
		m.Nodes[id] = Node{ID: id, State: st}
	}
	e := ExpertID{1, 2}
	m.Placement[e] = []Replica{
		{Node: "dead", Ready: true},
		{Node: "ghost", Ready: true}, // not in Nodes
		{Node: "join", Ready: true},
		{Node: "act", Ready: false},
		{Node: "drn", Ready: true},
		{Node: "act2", Ready: true},
	}
	cases := []struct {
		name, prefer, want string
	}{
		{"no preference", "", "drn"},
		{"preferred ready", "act2", "act2"},
		{"preferred not ready", "act", "drn"},
		{"preferred dead", "dead", "drn"},
		{"preferred absent", "zzz", "drn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := m.PickReplica(e, tc.prefer)
			if !ok || r.Node != tc.want {
				t.Errorf("PickReplica = %v %v, want %s", r, ok, tc.want)
			}
		})
	}
	if _, ok := m.PickReplica(ExpertID{0, 0}, ""); ok {
		t.Error("picked a replica of an unplaced expert")
	}
	m.Placement[e] = []Replica{{Node: "dead", Ready: true}, {Node: "act"}}
	if _, ok := m.PickReplica(e, "act"); ok {
		t.Error("picked an unready or dead replica")
	}
}

func TestChooseHome(t *testing.T) {
	m := NewMap()
	for _, id := range []string{"a", "b", "c"} {
		m.Nodes[id] = Node{ID: id, State: NodeActive}
	}
	m.Nodes["d"] = Node{ID: "d", State: NodeDraining}
	m.Sessions = m.Sessions.Set(Session{ID: "old", Home: "b", ExpiresMS: 100})
	m.Sessions = m.Sessions.Set(Session{ID: "lost", Home: "d", ExpiresMS: 100})
	m.Sessions = m.Sessions.Set(Session{ID: "x1", Home: "a", ExpiresMS: 100})
	m.Sessions = m.Sessions.Set(Session{ID: "x2", Home: "a", ExpiresMS: 100})
	m.Sessions = m.Sessions.Set(Session{ID: "x3", Home: "c", ExpiresMS: 100})

	if h, ok := ChooseHome(m, "old"); !ok || h != "b" {
		t.Errorf("existing session: %q %v", h, ok)
	}
	// a has 2, b 1 (old), c 1: a new session goes to b or c by hash, never a.
	if h, ok := ChooseHome(m, "new"); !ok || (h != "b" && h != "c") {
		t.Errorf("new session: %q %v", h, ok)
	}
	if h, ok := ChooseHome(m, "lost"); !ok || h == "d" || h == "a" {
		t.Errorf("session on a draining node: %q %v", h, ok)
	}
	// Once everything has expired, counts are all zero and the hash decides.
	h1, _ := ChooseHomeAt(m, "old", 100)
	h2, _ := ChooseHomeAt(m, "old", 100)
	if h1 != h2 || h1 == "d" {
		t.Errorf("ChooseHomeAt not deterministic or picked draining: %q %q", h1, h2)
	}
	if _, ok := ChooseHome(&Map{Nodes: map[string]Node{"d": {ID: "d", State: NodeDraining}}}, "s"); ok {
		t.Error("chose a home with no active node")
	}
}

// With equal counts, rendezvous hashing spreads sessions over nodes, and
// removing one node only rehomes the sessions that hashed to it.
func TestChooseHomeRendezvous(t *testing.T) {
	m := NewMap()
	for i := range 4 {
		id := fmt.Sprintf("node-%d", i)
		m.Nodes[id] = Node{ID: id, State: NodeActive}
	}
	counts := map[string]int{}
	before := map[string]string{}
	for i := range 4000 {
		s := fmt.Sprintf("sess-%d", i)
		h, _ := ChooseHome(m, s)
		counts[h]++
		before[s] = h
	}
	for id, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("%s got %d of 4000 sessions", id, c)
		}
	}
	delete(m.Nodes, "node-2")
	for s, h := range before {
		if got, _ := ChooseHome(m, s); h != "node-2" && got != h {
			t.Fatalf("session %s moved from %s to %s", s, h, got)
		}
	}
}

func TestApplyOnZeroMap(t *testing.T) {
	var m Map
	next, changed, err := m.Apply(Command{V: CommandVersion, Op: OpUpsertNode, Node: &Node{ID: "a", State: NodeActive}})
	if err != nil || !changed || next.Epoch != 1 || len(next.ActiveNodes()) != 1 {
		t.Fatalf("%v %v %+v", err, changed, next)
	}
	if m.Nodes != nil {
		t.Fatal("zero map modified")
	}
}
