package router

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// testLogWriter routes a library's log lines to t.Log until the test ends.
type testLogWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// restoreCounter is an FSM that counts snapshot installs.
type restoreCounter struct {
	*FSM
	restores atomic.Int32
}

func (r *restoreCounter) Restore(rc io.ReadCloser) error {
	r.restores.Add(1)
	return r.FSM.Restore(rc)
}

type peer struct {
	id   raft.ServerID
	addr raft.ServerAddress
	fsm  *restoreCounter
	raft *raft.Raft
}

// raftCluster starts n in-memory Raft peers with fresh FSMs, fully connected;
// the first voters are bootstrapped together, the rest start empty.
type raftCluster struct {
	t     *testing.T
	log   *testLogWriter
	peers []*peer
	trans []*raft.InmemTransport
}

func newRaftCluster(t *testing.T, voters int) *raftCluster {
	c := &raftCluster{t: t, log: &testLogWriter{t: t}}
	t.Cleanup(func() {
		for _, p := range c.peers {
			if err := p.raft.Shutdown().Error(); err != nil {
				t.Errorf("shutdown %s: %v", p.id, err)
			}
		}
		c.log.close()
	})
	var servers []raft.Server
	for i := range voters {
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("r%d", i)), Address: raft.ServerAddress(fmt.Sprintf("r%d", i))})
	}
	for _, s := range servers {
		c.start(s.ID, &raft.Configuration{Servers: servers})
	}
	return c
}

// start creates a peer; bootstrap is its initial configuration, or nil.
func (c *raftCluster) start(id raft.ServerID, bootstrap *raft.Configuration) *peer {
	t := c.t
	conf := raft.DefaultConfig()
	conf.LocalID = id
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.TrailingLogs = 1 // a peer added after a snapshot must install it
	conf.SnapshotThreshold = 1 << 20
	conf.Logger = hclog.New(&hclog.LoggerOptions{Name: string(id), Output: c.log, Level: hclog.Info})

	addr, trans := raft.NewInmemTransport(raft.ServerAddress(id))
	for i, other := range c.trans {
		trans.Connect(c.peers[i].addr, other)
		other.Connect(addr, trans)
	}
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	if bootstrap != nil {
		if err := raft.BootstrapCluster(conf, store, store, snaps, trans, *bootstrap); err != nil {
			t.Fatal(err)
		}
	}
	p := &peer{id: id, addr: addr, fsm: &restoreCounter{FSM: NewFSM()}}
	r, err := raft.NewRaft(conf, p.fsm, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	p.raft = r
	c.peers = append(c.peers, p)
	c.trans = append(c.trans, trans)
	return p
}

// leader waits until one peer is leader and returns it.
func (c *raftCluster) leader() *peer {
	c.t.Helper()
	var l *peer
	waitFor(c.t, "a leader", func() bool {
		for _, p := range c.peers {
			if p.raft.State() == raft.Leader {
				l = p
				return true
			}
		}
		return false
	})
	return l
}

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitMaps waits, on the FSMs' Changed channels, until cond holds for their
// current maps.
func waitMaps(t *testing.T, fsms []*FSM, what string, cond func([]*Map) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timeout)}}
		ms := make([]*Map, len(fsms))
		for i, f := range fsms {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(f.Changed())})
			ms[i] = f.Map()
		}
		if cond(ms) {
			return
		}
		if i, _, _ := reflect.Select(cases); i == 0 {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func allEqual(ms []*Map) bool {
	for _, m := range ms[1:] {
		if !m.Equal(ms[0]) {
			return false
		}
	}
	return true
}

func (c *raftCluster) fsms() []*FSM {
	var out []*FSM
	for _, p := range c.peers {
		out = append(out, p.fsm.FSM)
	}
	return out
}

// propose applies c through l and returns the FSM's response.
func propose(t *testing.T, l *peer, c Command) error {
	t.Helper()
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f := l.raft.Apply(b, 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("raft apply %s: %v", c.Op, err)
	}
	if resp := f.Response(); resp != nil {
		return resp.(error)
	}
	return nil
}

func TestRaftClusterReplicatesMap(t *testing.T) {
	c := newRaftCluster(t, 3)
	l := c.leader()

	cmds := fixture()
	cmds = append(cmds,
		Command{Op: OpSetReplication, Replication: 2},
		Command{Op: OpAssignSession, Session: &Session{ID: "s3", ExpiresMS: 9000}, NowMS: 1500},
		Command{Op: OpMoveSessions, NodeID: "c"},
		Command{Op: OpExpireSessions, NowMS: 2000},
	)
	for _, cmd := range cmds {
		if err := propose(t, l, cmd); err != nil {
			t.Fatalf("%s: %v", cmd.Op, err)
		}
	}
	// A command the FSM rejects is committed, answered with the error on the
	// leader, and changes no map.
	if err := propose(t, l, Command{Op: OpRemoveNode, NodeID: "ghost"}); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("remove ghost: %v", err)
	}
	// Placement computed from the replicated map, proposed on the leader.
	res, err := Place(l.fsm.Map().PlaceInput(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := propose(t, l, Command{Op: OpSetPlacement, Placement: PlacementEntries(res.Placement)}); err != nil {
		t.Fatal(err)
	}
	want := l.fsm.Map()
	waitMaps(t, c.fsms(), "three equal maps", func(ms []*Map) bool { return ms[0].Epoch == want.Epoch && allEqual(ms) })
	if want.Sessions.Len() != 2 || want.Sessions.At("s2").Home == "c" || want.Replication != 2 {
		t.Errorf("unexpected map: %+v", want)
	}

	// Snapshot on the leader, then a late non-voter catches up from it.
	if err := l.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	late := c.start("r-late", nil)
	if err := l.raft.AddNonvoter(late.id, late.addr, 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if err := propose(t, l, Command{Op: OpSetNodeState, NodeID: "b", State: NodeDraining, NowMS: 3000}); err != nil {
		t.Fatal(err)
	}
	want = l.fsm.Map()
	waitMaps(t, c.fsms(), "four equal maps", func(ms []*Map) bool { return ms[0].Epoch == want.Epoch && allEqual(ms) })
	if late.fsm.restores.Load() == 0 {
		t.Error("the late peer did not install the snapshot")
	}
}
