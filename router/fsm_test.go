package router

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// applyRaw feeds an encoded command to f as Raft would.
func applyRaw(f *FSM, c Command) error {
	b, err := c.Encode()
	if err != nil {
		return err
	}
	resp := f.Apply(&raft.Log{Type: raft.LogCommand, Data: b})
	if resp == nil {
		return nil
	}
	return resp.(error)
}

func mustApply(t *testing.T, f *FSM, cs ...Command) {
	t.Helper()
	for _, c := range cs {
		if err := applyRaw(f, c); err != nil {
			t.Fatalf("apply %s: %v", c.Op, err)
		}
	}
}

func node(id string, state NodeState) *Node {
	return &Node{ID: id, State: state, Capacity: 1 << 30, Devices: []Device{{Name: "cpu", MemBytes: 1 << 32}}}
}

// fixture: active a, b; draining c; one live model; a placement; two sessions.
func fixture() []Command {
	e00, e01 := ExpertID{0, 0}, ExpertID{0, 1}
	return []Command{
		{Op: OpUpsertNode, Node: node("a", NodeActive)},
		{Op: OpUpsertNode, Node: node("b", NodeActive)},
		{Op: OpUpsertNode, Node: node("c", NodeDraining)},
		{Op: OpSetModel, Model: &Model{ID: "m", Version: 1, Layers: 1, Experts: 2, ExpertBytes: 100, Admitted: true, Live: true}},
		{Op: OpSetPlacement, Placement: []PlacementEntry{
			{Expert: e00, Replicas: []Replica{{Node: "a", Device: "cpu", Ready: true}, {Node: "c", Device: "cpu"}}},
			{Expert: e01, Replicas: []Replica{{Node: "b", Device: "cpu"}}},
		}},
		{Op: OpAssignSession, Session: &Session{ID: "s1", Home: "a", LastUseMS: 1000, ExpiresMS: 2000}},
		{Op: OpAssignSession, Session: &Session{ID: "s2", Home: "c", LastUseMS: 1000, ExpiresMS: 5000}},
	}
}

func TestFSMOps(t *testing.T) {
	e00, e01 := ExpertID{0, 0}, ExpertID{0, 1}
	cases := []struct {
		name    string
		cmd     Command
		wantErr []error // all must match with errors.Is; nil for success
		changed bool
		check   func(t *testing.T, m *Map)
	}{
		{name: "bad version", cmd: Command{V: CommandVersion + 1, Op: OpExpireSessions, NowMS: 1}, wantErr: []error{ErrBadCommand, ErrUnsupportedVersion}},
		// A version-2 field in a version-1 command: an older replica would
		// ignore it and apply something else.
		{name: "field newer than its version", cmd: Command{V: 1, Op: OpSetModel, IfNoModel: true, Model: &Model{ID: "x", Version: 1, Live: true}}, wantErr: []error{ErrBadCommand}},
		{name: "unknown op", cmd: Command{Op: "explode"}, wantErr: []error{ErrBadCommand, ErrUnknownOp}},
		{name: "upsert new node joins", cmd: Command{Op: OpUpsertNode, Node: &Node{ID: "d"}, NowMS: 7}, changed: true,
			check: func(t *testing.T, m *Map) {
				if n := m.Nodes["d"]; n.State != NodeJoining || n.UpdatedMS != 7 {
					t.Errorf("node d = %+v", n)
				}
			}},
		{name: "upsert keeps state", cmd: Command{Op: OpUpsertNode, Node: &Node{ID: "a", Capacity: 5}}, changed: true,
			check: func(t *testing.T, m *Map) {
				if n := m.Nodes["a"]; n.State != NodeActive || n.Capacity != 5 {
					t.Errorf("node a = %+v", n)
				}
			}},
		{name: "upsert same is no change", cmd: Command{Op: OpUpsertNode, Node: node("a", NodeActive)}},
		{name: "upsert without id", cmd: Command{Op: OpUpsertNode, Node: &Node{}}, wantErr: []error{ErrBadCommand}},
		{name: "upsert bad state", cmd: Command{Op: OpUpsertNode, Node: &Node{ID: "x", State: "zombie"}}, wantErr: []error{ErrBadCommand}},
		{name: "set state", cmd: Command{Op: OpSetNodeState, NodeID: "b", State: NodeDraining, NowMS: 9}, changed: true,
			check: func(t *testing.T, m *Map) {
				if n := m.Nodes["b"]; n.State != NodeDraining || n.UpdatedMS != 9 {
					t.Errorf("node b = %+v", n)
				}
			}},
		{name: "set same state", cmd: Command{Op: OpSetNodeState, NodeID: "b", State: NodeActive}},
		{name: "set state unknown node", cmd: Command{Op: OpSetNodeState, NodeID: "zz", State: NodeDead}, wantErr: []error{ErrUnknownNode}},
		{name: "set state empty", cmd: Command{Op: OpSetNodeState, NodeID: "b"}, wantErr: []error{ErrBadCommand}},
		{name: "remove node drops replicas", cmd: Command{Op: OpRemoveNode, NodeID: "c"}, changed: true,
			check: func(t *testing.T, m *Map) {
				if _, ok := m.Nodes["c"]; ok {
					t.Error("c still there")
				}
				if got := m.Placement[e00]; len(got) != 1 || got[0].Node != "a" {
					t.Errorf("placement of e00 = %v", got)
				}
				if m.Sessions.At("s2").Home != "c" {
					t.Error("session s2 should stay until moved")
				}
			}},
		{name: "remove node drops empty entries", cmd: Command{Op: OpRemoveNode, NodeID: "b"}, changed: true,
			check: func(t *testing.T, m *Map) {
				if _, ok := m.Placement[e01]; ok {
					t.Errorf("e01 still placed: %v", m.Placement[e01])
				}
			}},
		{name: "remove unknown node", cmd: Command{Op: OpRemoveNode, NodeID: "zz"}, wantErr: []error{ErrUnknownNode}},
		{name: "set model new version not live", cmd: Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 2}}, changed: true,
			check: func(t *testing.T, m *Map) {
				if len(m.Versions) != 2 || m.Model == nil || m.Model.Version != 1 {
					t.Errorf("versions %v live %v", m.Versions, m.Model)
				}
			}},
		{name: "set model live switches", cmd: Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 2, Live: true}}, changed: true,
			check: func(t *testing.T, m *Map) {
				if m.Model == nil || m.Model.Version != 2 || m.Versions[0].Live || !m.Versions[1].Live {
					t.Errorf("versions %v live %v", m.Versions, m.Model)
				}
			}},
		{name: "set model unlive", cmd: Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 1, Layers: 1, Experts: 2, ExpertBytes: 100, Admitted: true}}, changed: true,
			check: func(t *testing.T, m *Map) {
				if m.Model != nil || len(m.Versions) != 1 {
					t.Errorf("versions %v live %v", m.Versions, m.Model)
				}
			}},
		{name: "set model same", cmd: Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 1, Layers: 1, Experts: 2, ExpertBytes: 100, Admitted: true, Live: true}}},
		// A node announcing its file only sets a model where there is none:
		// nodes started together with different files do not replace
		// each other's.
		{name: "set model if none, one is live", cmd: Command{Op: OpSetModel, IfNoModel: true, Model: &Model{ID: "other", Version: 1, Live: true}}},
		{name: "set model negative", cmd: Command{Op: OpSetModel, Model: &Model{ID: "m", Layers: -1}}, wantErr: []error{ErrBadCommand}},
		{name: "set replication", cmd: Command{Op: OpSetReplication, Replication: 2}, changed: true,
			check: func(t *testing.T, m *Map) {
				if m.Replication != 2 {
					t.Errorf("replication %d", m.Replication)
				}
			}},
		{name: "set replication same", cmd: Command{Op: OpSetReplication, Replication: 1}},
		{name: "set replication zero", cmd: Command{Op: OpSetReplication}, wantErr: []error{ErrBadCommand}},
		{name: "set placement", cmd: Command{Op: OpSetPlacement, Placement: []PlacementEntry{{Expert: e01, Replicas: []Replica{{Node: "a", Device: "cpu"}}}}}, changed: true,
			check: func(t *testing.T, m *Map) {
				if len(m.Placement) != 1 || m.Placement[e01][0].Node != "a" {
					t.Errorf("placement %v", m.Placement)
				}
			}},
		{name: "set placement same", cmd: Command{Op: OpSetPlacement, Placement: []PlacementEntry{
			{Expert: e01, Replicas: []Replica{{Node: "b", Device: "cpu"}}},
			{Expert: e00, Replicas: []Replica{{Node: "a", Device: "cpu", Ready: true}, {Node: "c", Device: "cpu"}}},
		}}},
		{name: "set placement unknown node", cmd: Command{Op: OpSetPlacement, Placement: []PlacementEntry{{Expert: e00, Replicas: []Replica{{Node: "zz"}}}}}, wantErr: []error{ErrUnknownNode}},
		{name: "set placement duplicate expert", cmd: Command{Op: OpSetPlacement, Placement: []PlacementEntry{
			{Expert: e00, Replicas: []Replica{{Node: "a"}}}, {Expert: e00, Replicas: []Replica{{Node: "b"}}},
		}}, wantErr: []error{ErrBadCommand, ErrBadPlacement}},
		{name: "set placement duplicate node", cmd: Command{Op: OpSetPlacement, Placement: []PlacementEntry{
			{Expert: e00, Replicas: []Replica{{Node: "a"}, {Node: "a"}}},
		}}, wantErr: []error{ErrBadCommand, ErrBadPlacement}},
		{name: "replica ready", cmd: Command{Op: OpSetReplicaReady, Expert: &e01, NodeID: "b", Ready: true}, changed: true,
			check: func(t *testing.T, m *Map) {
				if !m.Placement[e01][0].Ready {
					t.Error("not ready")
				}
			}},
		{name: "replica ready same", cmd: Command{Op: OpSetReplicaReady, Expert: &e00, NodeID: "a", Ready: true}},
		{name: "replica unready", cmd: Command{Op: OpSetReplicaReady, Expert: &e00, NodeID: "a"}, changed: true},
		{name: "replica unknown", cmd: Command{Op: OpSetReplicaReady, Expert: &e01, NodeID: "a", Ready: true}, wantErr: []error{ErrUnknownReplica}},
		{name: "replica missing expert", cmd: Command{Op: OpSetReplicaReady, NodeID: "a"}, wantErr: []error{ErrBadCommand}},
		{name: "assign session", cmd: Command{Op: OpAssignSession, Session: &Session{ID: "s3", Home: "b", ExpiresMS: 9000}, NowMS: 1500}, changed: true,
			check: func(t *testing.T, m *Map) {
				if s, _ := m.Sessions.Get("s3"); s.Home != "b" || s.LastUseMS != 1500 {
					t.Errorf("s3 = %+v", s)
				}
			}},
		{name: "assign session chooses home", cmd: Command{Op: OpAssignSession, Session: &Session{ID: "s3", ExpiresMS: 9000}, NowMS: 1500}, changed: true,
			check: func(t *testing.T, m *Map) {
				// a has s1, b has none: b has the fewest sessions.
				if s, _ := m.Sessions.Get("s3"); s.Home != "b" {
					t.Errorf("s3 = %+v", s)
				}
			}},
		{name: "assign same session", cmd: Command{Op: OpAssignSession, Session: &Session{ID: "s1", Home: "a", LastUseMS: 1000, ExpiresMS: 2000}}},
		{name: "assign unknown home", cmd: Command{Op: OpAssignSession, Session: &Session{ID: "s3", Home: "zz"}}, wantErr: []error{ErrUnknownNode}},
		{name: "assign no id", cmd: Command{Op: OpAssignSession, Session: &Session{Home: "a"}}, wantErr: []error{ErrBadCommand}},
		{name: "touch keeps ttl", cmd: Command{Op: OpTouchSession, SessionID: "s1", NowMS: 1500}, changed: true,
			check: func(t *testing.T, m *Map) {
				if s, _ := m.Sessions.Get("s1"); s.LastUseMS != 1500 || s.ExpiresMS != 2500 {
					t.Errorf("s1 = %+v", s)
				}
			}},
		{name: "touch explicit expiry", cmd: Command{Op: OpTouchSession, Session: &Session{ID: "s1", ExpiresMS: 10000}, NowMS: 1500}, changed: true,
			check: func(t *testing.T, m *Map) {
				if s, _ := m.Sessions.Get("s1"); s.LastUseMS != 1500 || s.ExpiresMS != 10000 {
					t.Errorf("s1 = %+v", s)
				}
			}},
		{name: "touch from the past", cmd: Command{Op: OpTouchSession, SessionID: "s1", NowMS: 500}},
		{name: "touch unknown", cmd: Command{Op: OpTouchSession, SessionID: "nope", NowMS: 1}, wantErr: []error{ErrUnknownSession}},
		{name: "touch without time", cmd: Command{Op: OpTouchSession, SessionID: "s1"}, wantErr: []error{ErrBadCommand}},
		{name: "delete session", cmd: Command{Op: OpDeleteSession, SessionID: "s1"}, changed: true,
			check: func(t *testing.T, m *Map) {
				if _, ok := m.Sessions.Get("s1"); ok {
					t.Error("s1 still there")
				}
			}},
		{name: "delete unknown session", cmd: Command{Op: OpDeleteSession, SessionID: "nope"}, wantErr: []error{ErrUnknownSession}},
		{name: "expire none", cmd: Command{Op: OpExpireSessions, NowMS: 1999}},
		{name: "expire at the boundary", cmd: Command{Op: OpExpireSessions, NowMS: 2000}, changed: true,
			check: func(t *testing.T, m *Map) {
				if _, ok := m.Sessions.Get("s1"); ok || m.Sessions.Len() != 1 {
					t.Errorf("sessions %v", m.Sessions)
				}
			}},
		{name: "expire without time", cmd: Command{Op: OpExpireSessions}, wantErr: []error{ErrBadCommand}},
		{name: "move sessions", cmd: Command{Op: OpMoveSessions, NodeID: "c"}, changed: true,
			check: func(t *testing.T, m *Map) {
				if s, _ := m.Sessions.Get("s2"); s.Home != "b" { // b has fewer sessions than a
					t.Errorf("s2 = %+v", s)
				}
			}},
		{name: "move sessions off an active node", cmd: Command{Op: OpMoveSessions, NodeID: "a"}, changed: true,
			check: func(t *testing.T, m *Map) {
				if s, _ := m.Sessions.Get("s1"); s.Home != "b" {
					t.Errorf("s1 = %+v", s)
				}
			}},
		{name: "move nothing", cmd: Command{Op: OpMoveSessions, NodeID: "b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFSM()
			mustApply(t, f, fixture()...)
			before := f.Map()
			beforeJSON, _ := before.MarshalJSON()
			err := applyRaw(f, tc.cmd)
			after := f.Map()
			if tc.wantErr == nil && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("error %v, want %v", err, want)
				}
			}
			if changed := after != before; changed != tc.changed {
				t.Errorf("changed = %v, want %v", changed, tc.changed)
			}
			wantEpoch := before.Epoch
			if tc.changed {
				wantEpoch++
			}
			if after.Epoch != wantEpoch {
				t.Errorf("epoch %d, want %d", after.Epoch, wantEpoch)
			}
			if b, _ := before.MarshalJSON(); !bytes.Equal(b, beforeJSON) {
				t.Error("the previous map was modified")
			}
			if tc.check != nil {
				tc.check(t, after)
			}
		})
	}
}

func TestMoveSessionsNoTarget(t *testing.T) {
	f := NewFSM()
	mustApply(t, f,
		Command{Op: OpUpsertNode, Node: node("a", NodeActive)},
		Command{Op: OpUpsertNode, Node: node("b", NodeDead)},
		Command{Op: OpAssignSession, Session: &Session{ID: "s", Home: "a", ExpiresMS: 10}},
	)
	if err := applyRaw(f, Command{Op: OpMoveSessions, NodeID: "a"}); !errors.Is(err, ErrNoActiveNode) {
		t.Fatalf("got %v, want ErrNoActiveNode", err)
	}
	if err := applyRaw(f, Command{Op: OpAssignSession, Session: &Session{ID: "t"}}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, f, Command{Op: OpSetNodeState, NodeID: "a", State: NodeDraining})
	if err := applyRaw(f, Command{Op: OpAssignSession, Session: &Session{ID: "u"}}); !errors.Is(err, ErrNoActiveNode) {
		t.Fatalf("got %v, want ErrNoActiveNode", err)
	}
}

// Sessions moved off a node spread over the others instead of piling on one.
func TestMoveSessionsSpreads(t *testing.T) {
	f := NewFSM()
	mustApply(t, f,
		Command{Op: OpUpsertNode, Node: node("a", NodeActive)},
		Command{Op: OpUpsertNode, Node: node("b", NodeActive)},
		Command{Op: OpUpsertNode, Node: node("c", NodeActive)},
	)
	for i := range 30 {
		mustApply(t, f, Command{Op: OpAssignSession, Session: &Session{ID: string(rune('A' + i)), Home: "a", ExpiresMS: 100}})
	}
	mustApply(t, f, Command{Op: OpMoveSessions, NodeID: "a"})
	m := f.Map()
	if a, b, c := len(m.SessionsOn("a")), len(m.SessionsOn("b")), len(m.SessionsOn("c")); a != 0 || b != 15 || c != 15 {
		t.Errorf("sessions per node a=%d b=%d c=%d, want 0 15 15", a, b, c)
	}
}

// At MaxSessions a new session evicts the least recently used one, the same
// one on every replica; updating a known session evicts nothing.
func TestSessionCap(t *testing.T) {
	defer func(n int) { maxSessions = n }(maxSessions)
	maxSessions = 3
	f := NewFSM()
	mustApply(t, f,
		Command{Op: OpUpsertNode, Node: node("a", NodeActive)},
		Command{Op: OpAssignSession, Session: &Session{ID: "old", Home: "a", LastUseMS: 10, ExpiresMS: 1e6}},
		Command{Op: OpAssignSession, Session: &Session{ID: "b", Home: "a", LastUseMS: 20, ExpiresMS: 1e6}},
		Command{Op: OpAssignSession, Session: &Session{ID: "a", Home: "a", LastUseMS: 20, ExpiresMS: 1e6}},
		Command{Op: OpTouchSession, SessionID: "old", NowMS: 30},
	)
	// "old" was touched last; of the two at 20, "a" has the smaller id.
	mustApply(t, f, Command{Op: OpAssignSession, Session: &Session{ID: "new", Home: "a", ExpiresMS: 1e6}, NowMS: 40})
	m := f.Map()
	if _, ok := m.Sessions.Get("a"); ok || m.Sessions.Len() != 3 {
		t.Fatalf("sessions %v: want a evicted, 3 left", m.Sessions)
	}
	mustApply(t, f, Command{Op: OpAssignSession, Session: &Session{ID: "new", Home: "a", ExpiresMS: 2e6}, NowMS: 50})
	if m := f.Map(); m.Sessions.Len() != 3 || m.Sessions.At("b").ID != "b" {
		t.Fatalf("re-assigning a known session evicted one: %v", m.Sessions)
	}
	// An expired session goes before the least recently used one ("b").
	mustApply(t, f, Command{Op: OpAssignSession, Session: &Session{ID: "short", Home: "a", LastUseMS: 60, ExpiresMS: 70}, NowMS: 60})
	mustApply(t, f, Command{Op: OpAssignSession, Session: &Session{ID: "later", Home: "a", ExpiresMS: 1e6}, NowMS: 80})
	if m := f.Map(); m.Sessions.Len() != 3 || m.Sessions.At("later").ID == "" || m.Sessions.At("short").ID != "" || m.Sessions.At("old").ID != "old" {
		t.Fatalf("sessions %v: want the expired one dropped", m.Sessions)
	}
}

// TestRestartUnreadiesReplicas: an upsert of a node with another Boot (a
// new process) clears its replicas' Ready and Staged flags, which its host
// sets again once it has loaded them; the same Boot, or an upsert with no
// Boot known before, changes no flag.
func TestRestartUnreadiesReplicas(t *testing.T) {
	f := NewFSM()
	e0, e1 := ExpertID{0, 0}, ExpertID{0, 1}
	a := node("a", NodeActive)
	mustApply(t, f,
		Command{Op: OpUpsertNode, Node: a}, // no Boot yet (an older build)
		Command{Op: OpUpsertNode, Node: node("b", NodeActive)},
		Command{Op: OpSetPlacement, Placement: []PlacementEntry{
			{Expert: e0, Replicas: []Replica{{Node: "a", Ready: true}, {Node: "b", Ready: true}}},
			{Expert: e1, Replicas: []Replica{{Node: "a", Ready: true, Staged: true}}},
		}},
	)
	flags := func() string {
		m := f.Map()
		var out []string
		for _, e := range []ExpertID{e0, e1} {
			for _, r := range m.Placement[e] {
				out = append(out, fmt.Sprintf("%d%s:%v/%v", e.Index, r.Node, r.Ready, r.Staged))
			}
		}
		return strings.Join(out, " ")
	}
	const ready = "0a:true/false 0b:true/false 1a:true/true"
	booted := *a
	booted.Boot = 100
	mustApply(t, f, Command{Op: OpUpsertNode, Node: &booted})
	if got := flags(); got != ready {
		t.Fatalf("first Boot known: %s, want %s", got, ready)
	}
	mustApply(t, f, Command{Op: OpUpsertNode, Node: &booted})
	if got := flags(); got != ready {
		t.Fatalf("same Boot: %s, want %s", got, ready)
	}
	restarted := booted
	restarted.Boot = 200
	mustApply(t, f, Command{Op: OpUpsertNode, Node: &restarted})
	if got, want := flags(), "0a:false/false 0b:true/false 1a:false/false"; got != want {
		t.Fatalf("restarted: %s, want %s", got, want)
	}
	mustApply(t, f, Command{Op: OpSetReplicaReady, Expert: &e0, NodeID: "a", Ready: true})
	if got, want := flags(), "0a:true/false 0b:true/false 1a:false/false"; got != want {
		t.Fatalf("after its host's report: %s, want %s", got, want)
	}
}

// TestSessionCapPerOwner: at the cap a new session evicts the least
// recently used session of the owner holding the most, not the oldest
// session of all, so a client inventing session ids evicts its own; a
// re-home keeps a session's owner.
func TestSessionCapPerOwner(t *testing.T) {
	defer func(n int) { maxSessions = n }(maxSessions)
	maxSessions = 4
	f := NewFSM()
	sess := func(id, owner string, last int64) Command {
		return Command{Op: OpAssignSession, Session: &Session{ID: id, Home: "a", Owner: owner, LastUseMS: last, ExpiresMS: 1e6}, NowMS: last}
	}
	mustApply(t, f,
		Command{Op: OpUpsertNode, Node: node("a", NodeActive)},
		sess("alice-1", "key:alice", 10), // the oldest of all
		sess("flood-1", "ip:6.6.6.6", 20),
		sess("flood-2", "ip:6.6.6.6", 30),
		sess("flood-3", "ip:6.6.6.6", 40),
	)
	has := func(ids ...string) {
		t.Helper()
		m := f.Map()
		for _, id := range ids {
			if _, ok := m.Sessions.Get(id); !ok {
				t.Fatalf("%s evicted; sessions %v", id, m.Sessions.Map())
			}
		}
		if m.Sessions.Len() != maxSessions {
			t.Fatalf("%d sessions, want %d", m.Sessions.Len(), maxSessions)
		}
	}
	mustApply(t, f, sess("flood-4", "ip:6.6.6.6", 50))
	has("alice-1", "flood-2", "flood-3", "flood-4") // flood-1 went
	mustApply(t, f, sess("bob-1", "key:bob", 60))
	has("alice-1", "flood-3", "flood-4", "bob-1") // the flooder's again
	mustApply(t, f, sess("alice-2", "key:alice", 70))
	has("alice-1", "alice-2", "flood-4", "bob-1")
	// Now alice holds the most: her oldest goes.
	mustApply(t, f, sess("carol-1", "key:carol", 75))
	has("alice-2", "flood-4", "bob-1", "carol-1")
	// One each: the smallest owner name ("ip:…") loses its session.
	mustApply(t, f, sess("dave-1", "key:dave", 78))
	has("alice-2", "bob-1", "carol-1", "dave-1")
	// A re-home names no owner, or another client: the owner stays.
	mustApply(t, f, Command{Op: OpAssignSession, Session: &Session{ID: "bob-1", Home: "a", Owner: "ip:6.6.6.6", ExpiresMS: 2e6}, NowMS: 80})
	if o := f.Map().Sessions.At("bob-1").Owner; o != "key:bob" {
		t.Errorf("a re-home changed the owner to %q", o)
	}
	if _, _, err := f.Map().Apply(Command{V: CommandVersion, Op: OpAssignSession, Session: &Session{ID: "x", Owner: strings.Repeat("o", maxOwner+1)}}); !errors.Is(err, ErrBadCommand) {
		t.Errorf("an owner over %d bytes: %v", maxOwner, err)
	}
}

// Apply must take time from the command: a session expiring at 2000 (long
// before the wall clock) survives an expiry at 1999.
func TestApplyNeverReadsTheClock(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, fixture()...)
	mustApply(t, f, Command{Op: OpExpireSessions, NowMS: 1999})
	if _, ok := f.Map().Sessions.Get("s1"); !ok {
		t.Fatal("s1 expired by the wall clock")
	}
	if h, ok := ChooseHomeAt(f.Map(), "s1", 1999); !ok || h != "a" {
		t.Errorf("ChooseHomeAt = %q %v", h, ok)
	}
	mustApply(t, f, Command{Op: OpExpireSessions, NowMS: 2000})
	if _, ok := f.Map().Sessions.Get("s1"); ok {
		t.Fatal("s1 not expired at 2000")
	}
}

func TestApplyIgnoresNonCommands(t *testing.T) {
	f := NewFSM()
	if r := f.Apply(&raft.Log{Type: raft.LogConfiguration, Data: []byte("junk")}); r != nil {
		t.Fatalf("got %v", r)
	}
	if r := f.Apply(&raft.Log{Type: raft.LogCommand, Data: []byte("junk")}); !errors.Is(r.(error), ErrBadCommand) {
		t.Fatalf("got %v", r)
	}
	if f.Map().Epoch != 0 {
		t.Fatal("epoch moved")
	}
}

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, fixture()...)
	mustApply(t, f, Command{Op: OpSetReplication, Replication: 3}, Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 2}})
	b := snapshotBytes(t, f)

	// A snapshot is of the map when taken, whatever happens after.
	mustApply(t, f, Command{Op: OpDeleteSession, SessionID: "s1"})

	g := NewFSM()
	ch := g.Changed()
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Error("Restore did not signal Changed")
	}
	h := NewFSM()
	mustApply(t, h, fixture()...)
	mustApply(t, h, Command{Op: OpSetReplication, Replication: 3}, Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 2}})
	if !g.Map().Equal(h.Map()) {
		t.Errorf("restored map differs:\n%+v\n%+v", g.Map(), h.Map())
	}
	if !reflect.DeepEqual(g.Map(), h.Map()) {
		t.Errorf("restored map not deeply equal:\n%#v\n%#v", g.Map(), h.Map())
	}
	// Restored FSM keeps applying.
	mustApply(t, g, Command{Op: OpDeleteSession, SessionID: "s1"})
	if !g.Map().Equal(f.Map()) {
		t.Error("maps diverge after restore")
	}
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	for name, data := range map[string]string{
		"garbage":          "not json",
		"version":          `{"v":2,"map":{}}`,
		"no map":           `{"v":1}`,
		"dup placement":    `{"v":1,"map":{"placement":[{"expert":{"layer":0,"index":0},"replicas":[{"node":"a"}]},{"expert":{"layer":0,"index":0},"replicas":[{"node":"a"}]}]}}`,
		"nodeless replica": `{"v":1,"map":{"placement":[{"expert":{"layer":0,"index":0},"replicas":[{"node":""}]}]}}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := NewFSM()
			if err := f.Restore(io.NopCloser(bytes.NewBufferString(data))); err == nil {
				t.Fatal("no error")
			}
			if f.Map().Epoch != 0 || len(f.Map().Nodes) != 0 {
				t.Fatal("map changed")
			}
		})
	}
}

func TestChangedNotifies(t *testing.T) {
	f := NewFSM()
	ch := f.Changed()
	done := make(chan uint64)
	go func() {
		<-ch
		done <- f.Map().Epoch
	}()
	mustApply(t, f, Command{Op: OpUpsertNode, Node: node("a", NodeActive)})
	select {
	case e := <-done:
		if e != 1 {
			t.Errorf("woke at epoch %d", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Changed never closed")
	}
	// A no-op command does not wake anyone.
	ch = f.Changed()
	mustApply(t, f, Command{Op: OpUpsertNode, Node: node("a", NodeActive)})
	select {
	case <-ch:
		t.Fatal("woken without a change")
	default:
	}
	// A failing one neither.
	if err := applyRaw(f, Command{Op: OpRemoveNode, NodeID: "x"}); err == nil {
		t.Fatal("no error")
	}
	select {
	case <-ch:
		t.Fatal("woken by a failed command")
	default:
	}
}

// Readers walk the map while a writer applies; run with -race.
func TestConcurrentReaders(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, fixture()...)
	const writes = 300
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for {
				ch := f.Changed()
				m := f.Map()
				if m.Epoch < last {
					t.Errorf("epoch went back: %d < %d", m.Epoch, last)
					return
				}
				last = m.Epoch
				_ = m.ActiveNodes()
				_ = m.SessionsOn("a")
				_, _ = m.PickReplica(ExpertID{0, 0}, "b")
				_, _ = ChooseHome(m, "x")
				_, _ = m.MarshalJSON()
				_ = m.Clone()
				select {
				case <-ch:
				case <-stop:
					return
				}
			}
		}()
	}
	e := ExpertID{0, 0}
	for i := range writes {
		c := Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "a", Ready: i%2 == 0}
		if i%3 == 0 {
			c = Command{Op: OpAssignSession, Session: &Session{ID: "x" + string(rune('a'+i%26)), ExpiresMS: int64(i)}}
		}
		if err := applyRaw(f, c); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestCommandEncodeDecode(t *testing.T) {
	e := ExpertID{3, 4}
	c := Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "n", Ready: true, NowMS: 5}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	c.V = 1 // the lowest version that carries it, so older replicas apply it too
	if !reflect.DeepEqual(got, c) {
		t.Errorf("got %+v, want %+v", got, c)
	}
	// Fields older replicas would ignore raise the version, so those
	// replicas refuse the command instead of applying something else.
	for _, c := range []Command{
		{Op: OpSetModel, Model: &Model{ID: "m", Version: 1, Live: true}, IfNoModel: true},
		{Op: OpStageExpert, Expert: &e, Version: strings.Repeat("ab", 32), Unstage: true},
	} {
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DecodeCommand(b); err != nil || got.V != 2 {
			t.Errorf("%s: decoded version %d, %v; want 2", c.Op, got.V, err)
		}
	}
	if _, err := DecodeCommand([]byte(`{"op":"expire_sessions","now_ms":1}`)); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("missing version: %v", err)
	}
	if _, err := DecodeCommand([]byte(`{"v":1,"op":"expire_sessions","now_ms":1} x`)); !errors.Is(err, ErrBadCommand) {
		t.Errorf("trailing data: %v", err)
	}
}

// A new live model file invalidates every replica's readiness (they hold
// the old weights); re-setting the same file keeps it.
func TestNewModelClearsReadiness(t *testing.T) {
	f := NewFSM()
	modelA := &Model{ID: "m", Digest: strings.Repeat("a", 64), Version: 1, Layers: 1, Experts: 1, TopK: 1, Live: true}
	e := ExpertID{Layer: 0, Index: 0}
	mustApply(t, f,
		Command{Op: OpUpsertNode, Node: node("a", NodeActive)},
		Command{Op: OpSetModel, Model: modelA},
		Command{Op: OpSetPlacement, Placement: []PlacementEntry{{Expert: e, Replicas: []Replica{{Node: "a", Device: "cpu"}}}}},
		Command{Op: OpSetReplicaReady, NodeID: "a", Expert: &e, Ready: true},
	)
	ready := func() bool { return f.Map().Placement[e][0].Ready }
	if !ready() {
		t.Fatal("replica not ready after set_replica_ready")
	}
	same := *modelA
	same.Version = 2 // a new version of the same file
	mustApply(t, f, Command{Op: OpSetModel, Model: &same})
	if !ready() {
		t.Error("re-setting the same file cleared readiness")
	}
	modelB := *modelA
	modelB.Digest, modelB.Version = strings.Repeat("b", 64), 3
	before := f.Map()
	mustApply(t, f, Command{Op: OpSetModel, Model: &modelB})
	if ready() {
		t.Error("a new model file left the old replica ready")
	}
	if !before.Placement[e][0].Ready {
		t.Error("the previous map was modified")
	}
}
