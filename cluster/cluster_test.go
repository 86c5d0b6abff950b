package cluster_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/internal/peersig"
	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/raft"
)

// testModel is a small MoE shape: 4 layers × 8 experts of 1 MiB.
var testModel = router.Model{ID: "test-moe", Digest: "00", Version: 1, Arch: "test", Layers: 4, Experts: 8, TopK: 2, ExpertBytes: 1 << 20, Live: true}

func setModel(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := testModel
	if err := c.Apply(ctx, router.Command{Op: router.OpSetModel, Model: &m}); err != nil {
		t.Fatal(err)
	}
}

// fullyPlaced reports whether every expert has min(replication, active)
// replicas, all on active nodes.
func fullyPlaced(m *router.Map) bool {
	if m.Model == nil {
		return false
	}
	want := min(m.Replication, len(m.ActiveNodes()))
	if len(m.Placement) != m.Model.Layers*m.Model.Experts {
		return false
	}
	for _, rs := range m.Placement {
		if len(rs) != want {
			return false
		}
		for _, r := range rs {
			if m.Nodes[r.Node].State != router.NodeActive {
				return false
			}
		}
	}
	return true
}

func raftServers(t *testing.T, n *cluster.Node) (voters, nonvoters []string) {
	t.Helper()
	f := n.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		} else {
			nonvoters = append(nonvoters, string(s.ID))
		}
	}
	return voters, nonvoters
}

func TestThreeNodesAgree(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	setModel(t, c)
	m := c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed")
	if m.Replication != 2 {
		t.Errorf("replication %d, want the default 2", m.Replication)
	}
	for _, i := range c.Running() {
		if got := c.Node(i).Map(); got.Epoch != m.Epoch || !got.Equal(m) {
			t.Errorf("n%d: epoch %d differs from %d", i, got.Epoch, m.Epoch)
		}
	}
	l := c.Leader()
	voters, non := raftServers(t, c.Node(l))
	if len(voters) != 3 || len(non) != 0 {
		t.Errorf("raft voters %v non-voters %v, want 3 voters", voters, non)
	}
	for id, n := range m.Nodes {
		if !n.Voter || n.HTTPAddr == "" || n.RaftAddr == "" || n.GossipAddr == "" || n.ActorAddr == "" || len(n.Devices) == 0 {
			t.Errorf("node %s incomplete in map: %+v", id, n)
		}
	}
	// Placed replicas not yet loaded anywhere make the cluster degraded;
	// once the hosts say they are ready, every node answers the admin API
	// with the same, healthy view.
	ac := &cluster.AdminClient{Base: "http://" + c.Config(l).HTTPAddr}
	if st, err := ac.Status(context.Background()); err != nil || st.Health != "degraded" ||
		!slices.ContainsFunc(st.Problems, func(p string) bool { return strings.Contains(p, "no ready replica") }) {
		t.Errorf("status with no replica ready: %+v, %v", st, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pe := range m.PlacementList() {
		for _, r := range pe.Replicas {
			id := pe.Expert
			if err := c.Apply(ctx, router.Command{Op: router.OpSetReplicaReady, Expert: &id, NodeID: r.Node, Ready: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	m = c.WaitAgree(10*time.Second, func(m *router.Map) bool {
		for _, pe := range m.PlacementList() {
			if !slices.ContainsFunc(pe.Replicas, func(r router.Replica) bool { return r.Ready }) {
				return false
			}
		}
		return true
	}, "every expert ready")
	for _, i := range c.Running() {
		ac := &cluster.AdminClient{Base: "http://" + c.Config(i).HTTPAddr}
		st, err := ac.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader != fmt.Sprintf("n%d", l) || st.Epoch != m.Epoch || st.Health != "ok" || len(st.Nodes) != 3 {
			t.Errorf("n%d status: %+v", i, st)
		}
	}
}

func TestLeaderFailover(t *testing.T) {
	c := clustertest.New(t, 5, clustertest.Options{})
	setModel(t, c)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed")
	old := c.Leader()
	survivor := (old + 1) % 5
	c.Kill(old)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := c.Node(survivor).Apply(ctx, router.Command{Op: router.OpAssignSession,
		Session: &router.Session{ID: "after-failover", ExpiresMS: time.Now().Add(time.Hour).UnixMilli()}})
	gap := time.Since(start)
	if err != nil {
		t.Fatalf("write after killing the leader: %v", err)
	}
	nl := c.WaitLeader(5 * time.Second)
	t.Logf("failover: leader n%d killed, n%d leads, first successful write after %v", old, nl, gap.Round(time.Millisecond))
	if gap > 3*time.Second {
		t.Errorf("failover gap %v exceeds 3s", gap)
	}
	if nl == old {
		t.Fatalf("killed node still leads")
	}
	// Writes keep flowing and the survivors converge.
	for i := range 5 {
		if err := c.Node(survivor).Apply(ctx, router.Command{Op: router.OpAssignSession,
			Session: &router.Session{ID: fmt.Sprintf("s%d", i), ExpiresMS: time.Now().Add(time.Hour).UnixMilli()}}); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitAgree(10*time.Second, func(m *router.Map) bool {
		return m.Sessions.Len() == 6 && m.Nodes[fmt.Sprintf("n%d", old)].State == router.NodeDead && fullyPlaced(m)
	}, "6 sessions, the old leader dead and experts re-placed")
}

// TestVoterBounceKeepsMaxVoters: a voter killed and back within the dead
// grace period had a non-voter promoted in its place; once it is back one
// voter is demoted, so bounces never grow the voters past MaxVoters.
func TestVoterBounceKeepsMaxVoters(t *testing.T) {
	c := clustertest.New(t, 4, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.MaxVoters = 3
		cfg.DeadGrace, cfg.MissingGrace = time.Minute, time.Minute
		return cfg
	}})
	l := c.WaitLeader(10 * time.Second)
	count := func() (int, int) {
		v, nv := raftServers(t, c.Node(c.Leader()))
		return len(v), len(nv)
	}
	clustertest.WaitFor(t, 15*time.Second, func() bool { v, nv := count(); return v == 3 && nv == 1 }, "3 voters and a non-voter")
	voters, _ := raftServers(t, c.Node(l))
	victim := -1
	for _, v := range voters {
		var i int
		fmt.Sscanf(v, "n%d", &i)
		if i != l {
			victim = i
			break
		}
	}
	c.Kill(victim)
	clustertest.WaitFor(t, 20*time.Second, func() bool { v, _ := count(); return v == 4 }, "the non-voter promoted while a voter is dead")
	c.Restart(victim)
	c.WaitActive(30*time.Second, 4)
	clustertest.WaitFor(t, 20*time.Second, func() bool { v, nv := count(); return v == 3 && nv == 1 }, "back to 3 voters and a non-voter")
}

func TestDeadNodeReplacedAndRejoins(t *testing.T) {
	c := clustertest.New(t, 4, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.MaxVoters = 3
		return cfg
	}})
	setModel(t, c)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed")
	l := c.Leader()
	voters, non := raftServers(t, c.Node(l))
	if len(voters) != 3 || len(non) != 1 {
		t.Fatalf("voters %v non-voters %v, want 3 and 1", voters, non)
	}
	// Kill a voter that is not the leader: the non-voter gets promoted.
	victim := -1
	for _, v := range voters {
		var i int
		fmt.Sscanf(v, "n%d", &i)
		if i != l {
			victim = i
			break
		}
	}
	id := fmt.Sprintf("n%d", victim)
	had := len(c.Node(l).Map().ExpertsOn(id))
	c.Kill(victim)
	start := time.Now()
	m := c.WaitMap(l, 10*time.Second, func(m *router.Map) bool {
		return m.Nodes[id].State == router.NodeDead && len(m.ExpertsOn(id)) == 0 && fullyPlaced(m)
	}, "the killed node dead and its experts re-placed")
	took := time.Since(start)
	t.Logf("re-placement: %s (held %d experts) marked dead and re-placed %v after the kill (epoch %d)", id, had, took.Round(time.Millisecond), m.Epoch)
	if took > 10*time.Second {
		t.Errorf("re-placement took %v", took)
	}
	clustertest.WaitFor(t, 5*time.Second, func() bool {
		v, _ := raftServers(t, c.Node(l))
		alive := 0
		for _, x := range v {
			if x != id {
				alive++
			}
		}
		return alive == 3
	}, "the non-voter promoted to voter")
	// After the grace period the dead node is gone from the map and Raft.
	c.WaitMap(l, 10*time.Second, func(m *router.Map) bool { _, ok := m.Nodes[id]; return !ok }, "the dead node removed")
	v, nv := raftServers(t, c.Node(l))
	t.Logf("after removal: voters %v non-voters %v", v, nv)
	if len(v)+len(nv) != 3 {
		t.Errorf("raft servers %v %v, want 3", v, nv)
	}
	// It comes back from its data dir and is active again.
	c.Restart(victim)
	c.WaitActive(15*time.Second, 4)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed after the rejoin")
}

func TestDrain(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	setModel(t, c)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 6 {
		err := c.Apply(ctx, router.Command{Op: router.OpAssignSession, Session: &router.Session{
			ID: fmt.Sprintf("s%d", i), Home: "n1", ExpiresMS: time.Now().Add(time.Hour).UnixMilli()}})
		if err != nil {
			t.Fatal(err)
		}
	}
	ac := &cluster.AdminClient{Base: "http://" + c.Config(2).HTTPAddr}
	if _, err := ac.Drain(ctx, "nope"); !errors.Is(err, cluster.ErrUnknownNode) {
		t.Errorf("drain of an unknown node: %v, want ErrUnknownNode", err)
	}
	// Leave says the same of a node nobody knows (it answered 200).
	for i := range 3 {
		resp, err := http.Post("http://"+c.Config(i).HTTPAddr+"/admin/v1/leave/nope", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "unknown_node") {
			t.Errorf("leave of an unknown node via n%d: %d %s, want 404 unknown_node", i, resp.StatusCode, b)
		}
	}
	r, err := ac.Drain(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Sessions != 6 {
		t.Errorf("drain reply: %d sessions, want the 6 it moves", r.Sessions)
	}
	m := c.WaitAgree(10*time.Second, func(m *router.Map) bool {
		return m.Nodes["n1"].State == router.NodeDraining && len(m.ExpertsOn("n1")) == 0 && len(m.SessionsOn("n1")) == 0 && fullyPlaced(m)
	}, "n1 drained")
	if m.Sessions.Len() != 6 {
		t.Errorf("%d sessions after drain, want 6", m.Sessions.Len())
	}
	// The last active node cannot be drained: nothing would take its
	// experts. Refused at once, it stays active.
	if _, err := ac.Drain(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	_, err = ac.Drain(ctx, "n0")
	if !errors.Is(err, router.ErrNoActiveNode) && !strings.Contains(fmt.Sprint(err), "only active node") {
		t.Errorf("draining the last active node: %v, want a refusal", err)
	}
	if st := c.Node(0).Map().Nodes["n0"].State; st != router.NodeActive {
		t.Errorf("n0 is %s after the refused drain", st)
	}
}

func TestRestartAllRestoresMap(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	setModel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Apply(ctx, router.Command{Op: router.OpAssignSession, Session: &router.Session{ID: "keep", Home: "n2", ExpiresMS: time.Now().Add(time.Hour).UnixMilli()}}); err != nil {
		t.Fatal(err)
	}
	before := c.WaitAgree(10*time.Second, func(m *router.Map) bool { return fullyPlaced(m) && m.Sessions.Len() == 1 }, "placement and a session")
	for i := range 3 {
		c.Kill(i)
	}
	for i := range 3 {
		c.Restart(i)
	}
	// The restarted processes gossip new Boot values (upserts after the
	// restore): everything else is as it was.
	processes := func(m *router.Map) *router.Map {
		m = m.Clone()
		m.Epoch = 0
		for id, n := range m.Nodes {
			n.Boot = 0
			m.Nodes[id] = n
		}
		return m
	}
	after := c.WaitAgree(20*time.Second, func(m *router.Map) bool { return m.Epoch >= before.Epoch && c.Leader() >= 0 }, "the restored epoch")
	if !processes(after).Equal(processes(before)) {
		a, _ := after.MarshalJSON()
		b, _ := before.MarshalJSON()
		t.Fatalf("map after restart differs:\nbefore %s\nafter  %s", b, a)
	}
	t.Logf("restored epoch %d on all nodes", after.Epoch)
	// And the cluster still takes writes.
	if err := c.Apply(ctx, router.Command{Op: router.OpDeleteSession, SessionID: "keep"}); err != nil {
		t.Fatal(err)
	}
}

func TestGracefulLeave(t *testing.T) {
	var logs lockedBuffer
	c := clustertest.New(t, 3, clustertest.Options{Logs: &logs, LogLevel: "info"})
	setModel(t, c)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed")
	l := c.Leader()
	c.Stop(l) // the leader leaves: leadership moves first
	nl := c.WaitLeader(5 * time.Second)
	id := fmt.Sprintf("n%d", l)
	c.WaitAgree(10*time.Second, func(m *router.Map) bool {
		_, ok := m.Nodes[id]
		return !ok && fullyPlaced(m)
	}, "the leaver gone from the map")
	v, nv := raftServers(t, c.Node(nl))
	if len(v) != 2 || len(nv) != 0 {
		t.Errorf("after leave: voters %v non-voters %v", v, nv)
	}
	// The others saw a departure, not a failure, and forget the member
	// once the map has dropped it: cluster_members counts two, alive.
	for _, i := range c.Running() {
		if want := fmt.Sprintf("n%d.memberlist: member gone: node=n%d member=%s state=left", i, i, id); !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in the logs", want)
		}
		clustertest.WaitFor(t, 10*time.Second, func() bool {
			_, known := c.Node(i).Members()[id]
			return !known
		}, fmt.Sprintf("n%d to forget %s", i, id))
		reg := prometheus.NewRegistry()
		reg.MustRegister(c.Node(i).Collector())
		if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP conclave:cluster_members Gossip members this node sees, by state.
# TYPE conclave:cluster_members gauge
conclave:cluster_members{state="alive"} 2
conclave:cluster_members{state="dead"} 0
conclave:cluster_members{state="left"} 0
`), "conclave:cluster_members"); err != nil {
			t.Errorf("n%d: %v", i, err)
		}
	}
}

func TestApplyRejected(t *testing.T) {
	c := clustertest.New(t, 2, clustertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, i := range []int{0, 1} { // leader and follower (forwarded)
		err := c.Node(i).Apply(ctx, router.Command{Op: router.OpSetNodeState, NodeID: "ghost", State: router.NodeDraining})
		if !errors.Is(err, cluster.ErrRejected) || !errors.Is(err, router.ErrUnknownNode) {
			t.Errorf("n%d: %v, want ErrRejected wrapping router.ErrUnknownNode", i, err)
		}
	}
	err := c.Node(1).Apply(ctx, router.Command{Op: "bogus"})
	if !errors.Is(err, cluster.ErrRejected) {
		t.Errorf("bogus op: %v", err)
	}
}

func TestClusterKeyRequired(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	c := keyedCluster(t, 2, key)
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"no key", nil}, {"wrong key", []byte("fedcba9876543210")}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clustertest.FastConfig()
			cfg.ID = "intruder"
			cfg.DataDir = t.TempDir()
			a := clustertest.FreeAddrs(t, 4)
			cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr = a[0], a[1], a[2], a[3]
			cfg.Join = []string{c.Config(0).GossipAddr}
			cfg.ClusterKey = tc.key
			cfg.Logger = cluster.NewLogger("intruder", testWriter{t}, "off")
			n, err := cluster.Start(cfg)
			if err == nil {
				n.Kill()
				t.Fatal("a node without the cluster key joined")
			}
			if !errors.Is(err, cluster.ErrJoin) {
				t.Errorf("err %v, want ErrJoin", err)
			}
		})
	}
	if got := len(c.Node(0).Members()); got != 2 {
		t.Errorf("members %v", c.Node(0).Members())
	}
}

// With a cluster key and no certificate files, Raft and the actors speak
// mutual TLS from a CA derived from the key. A host without the key, or a
// node of another cluster dialling a port it once knew, cannot reach Raft:
// before, a plain AppendEntries with a higher term made the leader step down.
func TestClusterKeyGuardsRaftAndActors(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	c := keyedCluster(t, 2, key)
	setModel(t, c)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed over key-derived TLS")
	l := c.Leader()
	leader := c.Node(l)
	term := leader.Raft().Stats()["term"]

	// A plain Raft transport: no key, no TLS.
	plain, err := raft.NewTCPTransport(net.JoinHostPort(clustertest.LoopbackIP(), "0"), nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	target := raft.ServerAddress(c.Config(l).RaftAddr)
	var resp raft.AppendEntriesResponse
	req := raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax,
		ID: []byte("stranger"), Addr: []byte(plain.LocalAddr())}, Term: 1 << 40}
	if err := plain.AppendEntries("", target, &req, &resp); err == nil {
		t.Errorf("a plain AppendEntries was answered (success %v, term %d)", resp.Success, resp.Term)
	}

	// TLS from another cluster's key is refused by Raft and the actors.
	other, err := cluster.KeyTLSClientForTest([]byte("fedcba9876543210fedcba9876543210"))
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{c.Config(l).RaftAddr}
	if clustertest.ActorRemotes() {
		addrs = append(addrs, c.Config(l).ActorAddr)
	}
	for _, addr := range addrs {
		cfg := other.Clone()
		cfg.ServerName = clustertest.LoopbackIP()
		if err := tlsExchange(addr, cfg); err == nil {
			t.Errorf("%s accepted another cluster's certificate", addr)
		}
	}

	// The same key's certificate is accepted: the derived CA is shared.
	same, err := cluster.KeyTLSClientForTest(key)
	if err != nil {
		t.Fatal(err)
	}
	same.ServerName = clustertest.LoopbackIP()
	conn, err := tls.Dial("tcp", c.Config(l).RaftAddr, same)
	if err != nil {
		t.Errorf("the cluster key's own certificate was refused: %v", err)
	} else {
		conn.Close()
	}

	if !leader.IsLeader() || leader.Raft().Stats()["term"] != term {
		t.Errorf("leader n%d: leading %v, term %s → %s", l, leader.IsLeader(), term, leader.Raft().Stats()["term"])
	}
	if err := c.Node(l).Apply(context.Background(), router.Command{Op: router.OpSetReplication, Replication: 2}); err != nil {
		t.Errorf("apply after the probes: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := cluster.InitTLS(dir, []string{"n0", "n1", "n2"}, []string{clustertest.LoopbackIP()}, time.Hour); err != nil {
		t.Fatal(err)
	}
	c := clustertest.New(t, 3, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		f := cluster.TLSLayout(dir, fmt.Sprintf("n%d", i))
		cfg.TLS = &f
		return cfg
	}})
	setModel(t, c)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed over TLS raft")

	caPEM, err := os.ReadFile(cluster.TLSLayout(dir, "n0").CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	addrs := []string{c.Config(0).RaftAddr}
	if clustertest.ActorRemotes() {
		addrs = append(addrs, c.Config(0).ActorAddr)
	}
	for _, addr := range addrs {
		// A client that trusts the CA but has no certificate is refused.
		if err := tlsExchange(addr, &tls.Config{RootCAs: pool, ServerName: clustertest.LoopbackIP()}); err == nil {
			t.Errorf("%s accepted a client without a certificate", addr)
		} else {
			t.Logf("%s without client cert: %v", addr, err)
		}
	}
}

// TestWrongCANodeNotVoter: a node whose certificate comes from another CA
// gossips with the cluster (the cluster key is right) but Raft cannot reach
// it. It must not become a voter: a one-node cluster that counted it would
// need it for every quorum and lose its leader for good. A node with the
// right certificate joining after it is promoted once Raft reaches it.
func TestWrongCANodeNotVoter(t *testing.T) {
	defer cluster.SetStuckNonVoterForTest(time.Second)()
	good, bad := t.TempDir(), t.TempDir()
	if _, err := cluster.InitTLS(good, []string{"n0", "n1", "n2"}, []string{clustertest.LoopbackIP()}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.InitTLS(bad, []string{"n1"}, []string{clustertest.LoopbackIP()}, time.Hour); err != nil {
		t.Fatal(err)
	}
	c := clustertest.New(t, 1, clustertest.Options{NoWait: true, Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		dir := good
		if i == 1 {
			dir = bad
		}
		f := cluster.TLSLayout(dir, fmt.Sprintf("n%d", i))
		cfg.TLS = &f
		return cfg
	}})
	c.WaitActive(10*time.Second, 1)
	c.Add()
	// The leader upserts a gossiping member into the map in the reconcile
	// that handles its Raft membership, so once n1 is in the leader's map
	// the leader has decided its suffrage.
	c.WaitMap(0, 10*time.Second, func(m *router.Map) bool { _, ok := m.Nodes["n1"]; return ok }, "n1 in the leader's map")
	if voters, _ := raftServers(t, c.Node(0)); len(voters) != 1 {
		t.Fatalf("voters %v: the node Raft cannot reach was made a voter", voters)
	}
	// Status says so once it has lasted (30 s in production, 1 s here).
	clustertest.WaitFor(t, 10*time.Second, func() bool {
		st := c.Node(0).Status()
		return st.Health == "degraded" && slices.ContainsFunc(st.Problems, func(p string) bool {
			return strings.HasPrefix(p, "node n1 is still a Raft non-voter")
		})
	}, "status to name n1, a non-voter for longer than it takes")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Through n0: n1 knows no leader, Raft never having reached it.
	if err := c.Node(0).Apply(ctx, router.Command{Op: router.OpSetReplication, Replication: 1}); err != nil {
		t.Fatalf("apply with the unreachable node in the cluster: %v", err)
	}
	c.Add()
	clustertest.WaitFor(t, 15*time.Second, func() bool {
		v, _ := raftServers(t, c.Node(0))
		return slices.Contains(v, "n2")
	}, "n2, reachable over Raft, promoted to voter")
	if voters, _ := raftServers(t, c.Node(0)); slices.Contains(voters, "n1") {
		t.Fatalf("voters %v include the unreachable n1", voters)
	}
	if err := c.Node(2).Apply(ctx, router.Command{Op: router.OpSetReplication, Replication: 2}); err != nil {
		t.Fatalf("apply with two voters: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// checkPeerSignatures: nodes sign their admin calls with a key derived from
// the cluster key (TestAdminAuth's "0123456789abcdef"). A signed call is
// accepted once: the same request again, another body, another cluster's
// key, or a signature left off a body that could be signed are refused. A
// guarded follower relays a peer's signed call to the leader signed as
// itself.
func checkPeerSignatures(t *testing.T, base func(int) string, leader int) {
	t.Helper()
	key := peersig.Key([]byte("0123456789abcdef"), "admin")
	host := func(node int) string { return strings.TrimPrefix(base(node), "http://") }
	send := func(node int, method, p, body string, hdr http.Header) int {
		t.Helper()
		req, err := http.NewRequest(method, base(node)+p, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = hdr.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	empty := peersig.BodyDigest(nil)
	signFor := func(node int, k []byte, method, p, digest string) http.Header {
		h := http.Header{}
		peersig.Sign(h, k, time.Now(), method, p, digest, host(node))
		return h
	}
	for _, node := range []int{0, 1} { // guarded with an admin key, and without one
		sign := func(k []byte, method, p, digest string) http.Header { return signFor(node, k, method, p, digest) }
		h := sign(key, "GET", "/admin/v1/map", empty)
		if code := send(node, "GET", "/admin/v1/map", "", h); code != http.StatusOK {
			t.Fatalf("n%d: a signed GET: %d", node, code)
		}
		for _, tc := range []struct {
			what, method, p, body string
			hdr                   http.Header
		}{
			{"the same signed GET again", "GET", "/admin/v1/map", "", h},
			{"a signed GET for another path", "GET", "/admin/v1/nodes", "", h},
			{"another body", "POST", "/admin/v1/rebalance", `{"x":1}`, sign(key, "POST", "/admin/v1/rebalance", empty)},
			{"another cluster's key", "GET", "/admin/v1/map", "", sign(peersig.Key([]byte("fedcba9876543210"), "admin"), "GET", "/admin/v1/map", empty)},
			{"the API's key", "GET", "/admin/v1/map", "", sign(peersig.Key([]byte("0123456789abcdef"), "api"), "GET", "/admin/v1/map", empty)},
			{"a body left unsigned", "POST", "/admin/v1/rebalance", "", sign(key, "POST", "/admin/v1/rebalance", peersig.UnsignedBody)},
			{"a signature for another node", "GET", "/admin/v1/map", "", signFor(2, key, "GET", "/admin/v1/map", empty)},
		} {
			if code := send(node, tc.method, tc.p, tc.body, tc.hdr); code != http.StatusUnauthorized {
				t.Errorf("n%d: %s: %d, want 401", node, tc.what, code)
			}
		}
	}
	follower := 0
	if leader == 0 {
		follower = 1
	}
	if code := send(follower, "POST", "/admin/v1/rebalance", "", signFor(follower, key, "POST", "/admin/v1/rebalance", empty)); code != http.StatusOK {
		t.Errorf("a peer's signed rebalance through the guarded follower n%d to the leader n%d: %d", follower, leader, code)
	}
}

// TestAdminAuth: three nodes sharing a cluster key: n0 guarded by an admin
// key, n1 guarded with no admin key (closed to clients, as API keys without
// an admin key leave it), n2 open. Clients need the admin key where there
// is one, cannot get into n1 at all and walk into n2; every node reaches
// every other's admin API with the token derived from the cluster key
// (forwarded applies, a graceful leave); an open node relays a client's
// request to a guarded leader with the client's credentials, not its own
// token; /healthz stays open.
func TestAdminAuth(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.ClusterKey = []byte("0123456789abcdef")
		switch i {
		case 0:
			cfg.AdminKeys = []string{"adm-key"}
		case 1:
			cfg.AdminGuard = true
		}
		return cfg
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base := func(i int) string { return "http://" + c.Config(i).HTTPAddr }
	for _, tc := range []struct {
		node int
		key  string
		ok   bool
	}{
		{0, "", false}, {0, "wrong", false}, {0, "adm-key", true},
		{1, "", false}, {1, "adm-key", false},
		{2, "", true},
	} {
		_, err := (&cluster.AdminClient{Base: base(tc.node), Key: tc.key}).Status(ctx)
		if (tc.ok && err != nil) || (!tc.ok && !errors.Is(err, cluster.ErrUnauthorized)) {
			t.Fatalf("n%d, key %q: %v (want ok=%v)", tc.node, tc.key, err, tc.ok)
		}
	}
	for _, p := range []string{"/admin/v1/map", "/v1/../admin/v1/map", "//admin/v1/map", "/admin"} {
		resp, err := http.Get(base(0) + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a key: %d", p, resp.StatusCode)
		}
	}
	resp, err := http.Get(base(1) + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
	l := c.Leader()
	checkPeerSignatures(t, base, l)
	// Every follower forwards an apply to the leader's admin API.
	for i := range 3 {
		if i == l {
			continue
		}
		err := c.Node(i).Apply(ctx, router.Command{Op: router.OpAssignSession,
			Session: &router.Session{ID: fmt.Sprintf("s%d", i), Home: fmt.Sprintf("n%d", l), ExpiresMS: 1 << 50}})
		if err != nil {
			t.Fatalf("n%d's forwarded apply to n%d: %v", i, l, err)
		}
	}
	if l != 2 {
		// The open node relays a client's rebalance to the guarded leader
		// with the client's (missing) credentials.
		_, err := (&cluster.AdminClient{Base: base(2)}).Rebalance(ctx)
		if !errors.Is(err, cluster.ErrUnauthorized) {
			t.Errorf("rebalance through the open n2 to the guarded leader n%d: %v, want ErrUnauthorized", l, err)
		}
		if _, err := (&cluster.AdminClient{Base: base(2), Key: "adm-key"}).Rebalance(ctx); l == 0 && err != nil {
			t.Errorf("rebalance through n2 with the leader's admin key: %v", err)
		}
	}
	// A graceful leave asks the leader, too.
	f := (l + 1) % 3
	c.Stop(f)
	id := fmt.Sprintf("n%d", f)
	c.WaitMap(l, 10*time.Second, func(m *router.Map) bool { _, ok := m.Nodes[id]; return !ok }, "the leaver gone from the map")
}

// TestDataDirInUse: a second node started on a running node's data dir
// fails at once, saying so (it waited for the Raft store's file lock
// forever, deaf to signals).
func TestDataDirInUse(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Options{})
	c.WaitLeader(10 * time.Second)
	cfg := c.Config(0)
	addrs := clustertest.FreeAddrs(t, 4)
	cfg.ID = "other"
	cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr = addrs[0], addrs[1], addrs[2], addrs[3]
	cfg.Join = nil
	n, err := cluster.Start(cfg)
	if err == nil {
		n.Kill()
		t.Fatal("a second node started on a data dir in use")
	}
	if !errors.Is(err, cluster.ErrDataDirInUse) {
		t.Fatalf("Start: %v, want ErrDataDirInUse", err)
	}
}

// TestWaitCaughtUp: a node restarted from its data dir reads the map its
// disk held until the leader reaches it; WaitCaughtUp returns only once
// its map has what the cluster committed while it was down.
func TestWaitCaughtUp(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.DeadGrace, cfg.MissingGrace = time.Minute, time.Minute
		return cfg
	}})
	l := c.WaitLeader(10 * time.Second)
	down := (l + 1) % 3
	c.Kill(down)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Far more entries than Raft sends in one batch (64), so the first
	// batch's commit index is not the leader's.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= 3000; i = next.Add(1) {
				if err := c.Node(l).Apply(ctx, router.Command{Op: router.OpSetReplication, Replication: int(i%2) + 2}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := c.Node(l).Map().Epoch
	c.Restart(down)
	if err := c.Node(down).WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.Node(down).Map().Epoch; got < want {
		t.Errorf("after WaitCaughtUp the restarted node's map is at epoch %d; the leader had committed epoch %d", got, want)
	}
	// The leader has nobody to wait for but its own log.
	if err := c.Node(l).WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestForgedSignatureNoBodyRead: a request with a made-up peer signature is
// refused on its headers: the node neither waits for nor buffers the body
// it announces (4 MiB here, never sent), so unauthenticated clients cannot
// hold its memory.
func TestForgedSignatureNoBodyRead(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.ClusterKey = []byte("0123456789abcdef")
		cfg.AdminKeys = []string{"adm-key"}
		return cfg
	}})
	cn, err := net.Dial("tcp", c.Config(0).HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	sig := "t=1,n=" + strings.Repeat("a", 32) + ",b=" + strings.Repeat("b", 64) + ",s=" + strings.Repeat("c", 64)
	fmt.Fprintf(cn, "POST /admin/v1/apply HTTP/1.1\r\nHost: x\r\nX-Conclave-Signature: %s\r\nContent-Length: %d\r\n\r\n", sig, 4<<20)
	cn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(cn).ReadString('\n')
	if err != nil || !strings.Contains(line, " 401 ") {
		t.Fatalf("a forged signature with the body still to come: %q %v, want a 401 at once", line, err)
	}
}

// rogueDelegate gossips whatever metadata a rogue process likes.
type rogueDelegate struct{ meta []byte }

func (d rogueDelegate) NodeMeta(int) []byte           { return d.meta }
func (rogueDelegate) NotifyMsg([]byte)                {}
func (rogueDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (rogueDelegate) LocalState(bool) []byte          { return nil }
func (rogueDelegate) MergeRemoteState([]byte, bool)   {}

// TestRogueGossipRefused: with a cluster key, a plain memberlist process
// without it (claiming to be a reached, model-holding node) cannot join:
// it never becomes a member, a map node or a Raft server. (Without a key
// gossip admits anyone; the CLI requires one for guarded nodes and gives
// serve one of its own.)
func TestRogueGossipRefused(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.ClusterKey = []byte("0123456789abcdef")
		return cfg
	}})
	meta, _ := json.Marshal(cluster.NodeMeta{ID: "rogue", HTTP: "127.0.0.1:1", Raft: "127.0.0.1:1", Actor: "127.0.0.1:2",
		Capacity: 1 << 30, RaftReached: true, Models: []string{strings.Repeat("ab", 32)}})
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "rogue"
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = clustertest.LoopbackIP(), 0, 0
	mc.Delegate = rogueDelegate{meta}
	mc.LogOutput = io.Discard
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	if n, err := ml.Join([]string{c.Config(0).GossipAddr}); err == nil {
		t.Fatalf("a process without the cluster key joined gossip (%d contacted)", n)
	}
	if _, seen := c.Node(0).Members()["rogue"]; seen {
		t.Error("the node lists the rogue as a member")
	}
}

// TestDrainBothOfTwo: two drains at once, of the two nodes of a cluster,
// cannot both pass: the map refuses the one that would leave no node
// active.
func TestDrainBothOfTwo(t *testing.T) {
	c := clustertest.New(t, 2, clustertest.Options{})
	setModel(t, c)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ac := &cluster.AdminClient{Base: "http://" + c.Config(i).HTTPAddr}
			_, errs[i] = ac.Drain(ctx, fmt.Sprintf("n%d", i))
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Errorf("drain n0: %v; drain n1: %v; want exactly one refused", errs[0], errs[1])
	}
	m := c.WaitAgree(10*time.Second, func(m *router.Map) bool {
		return m.Nodes["n0"].State != router.NodeActive || m.Nodes["n1"].State != router.NodeActive
	}, "a drain applied")
	if len(m.ActiveNodes()) != 1 {
		t.Errorf("active nodes %v: n0 %s, n1 %s", m.ActiveNodes(), m.Nodes["n0"].State, m.Nodes["n1"].State)
	}
}

// TestWaitCaughtUpOlderLeader: a leader of a build without the epoch route
// (a rolling upgrade) answers 404; a follower restarted far behind then
// waits for the epoch of the leader's map, neither for good nor only for
// the first batch of entries Raft sends.
func TestWaitCaughtUpOlderLeader(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	l := c.WaitLeader(10 * time.Second)
	// A host pattern wins over the registered route, on the leader's mux only.
	c.Node(l).Mux().HandleFunc("GET 127.0.0.1/admin/v1/epoch", http.NotFound)
	f := (l + 1) % 3
	c.Kill(f)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	now := time.Now()
	for i := range 600 {
		if err := c.Node(l).Apply(ctx, router.Command{Op: router.OpAssignSession, NowMS: now.UnixMilli(),
			Session: &router.Session{ID: fmt.Sprintf("s%d", i), ExpiresMS: now.Add(time.Hour).UnixMilli()}}); err != nil {
			t.Fatal(err)
		}
	}
	want := c.Node(l).Map().Epoch
	c.Restart(f)
	if err := c.Node(f).WaitCaughtUp(ctx); err != nil {
		t.Fatalf("WaitCaughtUp under a leader without the epoch route: %v", err)
	}
	if got := c.Node(f).Map().Epoch; got < want {
		t.Errorf("WaitCaughtUp returned at epoch %d; the leader had committed %d", got, want)
	}
}

// TestDuplicateID: a node started with the id of a live member (another
// address) is refused with a clear error; it used to start and wait
// forever, ignored by gossip.
func TestDuplicateID(t *testing.T) {
	c := clustertest.New(t, 2, clustertest.Options{})
	c.WaitActive(10*time.Second, 2)
	cfg := clustertest.FastConfig()
	cfg.ID = "n1"
	cfg.DataDir = t.TempDir()
	a := clustertest.FreeAddrs(t, 4)
	cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr = a[0], a[1], a[2], a[3]
	cfg.Join = []string{c.Config(0).GossipAddr}
	cfg.Logger = cluster.NewLogger("dup", testWriter{t}, "off")
	n, err := cluster.Start(cfg)
	if err == nil {
		n.Kill()
		t.Fatal("a second n1 started")
	}
	if !errors.Is(err, cluster.ErrJoin) || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), c.Config(1).GossipAddr) {
		t.Errorf("err %v, want ErrJoin naming n1's address %s", err, c.Config(1).GossipAddr)
	}
	// The real n1 is unharmed.
	if st := c.Node(0).Members()["n1"]; st != cluster.GossipAlive {
		t.Errorf("n1 is %v to n0", st)
	}
	// n1 killed and restarted at once from its data dir on new addresses:
	// peers may still gossip the killed one as alive, but this is the same
	// node, not a duplicate, and it starts.
	c.Kill(1)
	cfg = c.Config(1)
	a = clustertest.FreeAddrs(t, 4)
	cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr = a[0], a[1], a[2], a[3]
	cfg.Join = []string{c.Config(0).GossipAddr}
	cfg.Logger = cluster.NewLogger("n1-again", testWriter{t}, "off")
	n, err = cluster.Start(cfg)
	if err != nil {
		t.Fatalf("n1 restarted from its data dir on new addresses: %v", err)
	}
	defer n.Kill()
	// Once gossip has declared the killed one dead, peers take the new
	// address (they ignored it for about a minute, until the dead entry
	// was reaped).
	start := time.Now()
	clustertest.WaitFor(t, 30*time.Second, func() bool {
		m := c.Node(0).Map()
		nd, ok := m.Nodes["n1"]
		return ok && nd.GossipAddr == cfg.GossipAddr && nd.State == router.NodeActive
	}, "n0's map to have n1 active at its new address")
	t.Logf("n1 active at its new address %v after its restart", time.Since(start).Round(time.Millisecond))
}

// tlsExchange dials addr with cfg and exchanges a byte: with TLS 1.3 a
// server's refusal of the client certificate arrives on the first read.
func tlsExchange(addr string, cfg *tls.Config) error {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte{0}); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

// TestRejoinWrongKey: a member restarted from its data dir with another
// cluster key starts (it has state of its own) but can never rejoin; it
// says so, where it used to retry in silence after one warning.
func TestRejoinWrongKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	c := keyedCluster(t, 2, key)
	c.WaitActive(10*time.Second, 2)
	c.Kill(1)
	cfg := c.Config(1)
	cfg.ClusterKey = []byte("fedcba9876543210fedcba9876543210")
	var logs lockedBuffer
	cfg.Logger = cluster.NewLogger("n1", &logs, "warn")
	var n *cluster.Node
	clustertest.WaitFor(t, 10*time.Second, func() bool {
		var err error
		n, err = cluster.Start(cfg)
		return err == nil
	}, "n1 to start again from its data dir")
	defer n.Kill()
	clustertest.WaitFor(t, 20*time.Second, func() bool {
		return strings.Contains(logs.String(), "the peers use another cluster key")
	}, "n1 to say its key is not the peers'")
}

// keyedCluster starts n nodes sharing cluster key key.
func keyedCluster(t *testing.T, n int, key []byte) *clustertest.Cluster {
	t.Helper()
	return clustertest.New(t, n, clustertest.Options{Config: func(int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.ClusterKey = key
		return cfg
	}})
}

// TestHTTPIdleTimeout: a keep-alive connection that waits longer than
// HTTPIdleTimeout for its next request is closed. Without it (the server
// had only a header timeout), each idle client held a file descriptor
// for good, and enough of them took the node's HTTP API off the air.
func TestHTTPIdleTimeout(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Options{Config: func(int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.HTTPIdleTimeout = 300 * time.Millisecond
		return cfg
	}})
	conn, err := net.Dial("tcp", c.Config(0).HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Fatal("the server closed the connection after one request; the test needs keep-alive")
	}
	// Idle: the server must close it, long before this deadline.
	start := time.Now()
	conn.SetReadDeadline(start.Add(20 * time.Second))
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle keep-alive connection: read %v after %v, want EOF (closed by the server)", err, time.Since(start))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("closed after %v, want about the 300ms idle timeout", d)
	}
}

// TestJoinPromotedUnderWrites: a node that joins while the map changes all
// the time (sessions being routed) is promoted to voter like any other. It
// used to stay a non-voter: it said Raft had reached it only once its map
// had the epoch the leader had at the moment it asked, and under a steady
// stream of writes a follower's map is always a batch behind that.
func TestJoinPromotedUnderWrites(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	setModel(t, c)
	c.WaitAgree(10*time.Second, fullyPlaced, "the model fully placed")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				actx, acancel := context.WithTimeout(ctx, 2*time.Second)
				c.Apply(actx, router.Command{Op: router.OpAssignSession, Session: &router.Session{
					ID: fmt.Sprintf("w%d-%d", w, i), Home: "n0", ExpiresMS: time.Now().Add(time.Hour).UnixMilli()}})
				acancel()
			}
		}()
	}
	promoted := func(id string) {
		t.Helper()
		clustertest.WaitFor(t, 20*time.Second, func() bool {
			voters, _ := raftServers(t, c.Node(c.Leader()))
			return slices.Contains(voters, id)
		}, id+" promoted to voter while the map changes")
	}
	j := c.Add()
	promoted(c.Config(j).ID)
	// Restarted from its data dir after leaving, as in a rolling restart.
	for range 3 {
		c.Stop(j)
		clustertest.WaitFor(t, 20*time.Second, func() bool {
			voters, non := raftServers(t, c.Node(c.Leader()))
			return !slices.Contains(voters, c.Config(j).ID) && !slices.Contains(non, c.Config(j).ID)
		}, "the node that left out of the Raft configuration")
		c.Restart(j)
		promoted(c.Config(j).ID)
	}
	cancel()
	wg.Wait()
}

// TestNonVoterBeyondMaxVotersNotStuck: a non-voter held back by MaxVoters
// is not reported stuck, while a voter drains too (the leader still counts
// a draining voter; Status once counted active ones only and blamed the
// non-voter's Raft address).
func TestNonVoterBeyondMaxVotersNotStuck(t *testing.T) {
	defer cluster.SetStuckNonVoterForTest(time.Nanosecond)() // at once: only the voter count decides
	c := clustertest.New(t, 4, clustertest.Options{Config: func(int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.MaxVoters = 3
		return cfg
	}})
	clustertest.WaitFor(t, 15*time.Second, func() bool {
		v, nv := raftServers(t, c.Node(c.Leader()))
		return len(v) == 3 && len(nv) == 1
	}, "3 voters and a non-voter")
	l := c.Leader()
	voters, _ := raftServers(t, c.Node(l))
	victim := voters[0]
	if victim == c.Config(l).ID {
		victim = voters[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := (&cluster.AdminClient{Base: "http://" + c.Config(l).HTTPAddr}).Drain(ctx, victim); err != nil {
		t.Fatal(err)
	}
	c.WaitMap(l, 10*time.Second, func(m *router.Map) bool { return m.Nodes[victim].State == router.NodeDraining }, victim+" draining")
	if st := c.Node(l).Status(); slices.ContainsFunc(st.Problems, func(p string) bool { return strings.Contains(p, "still a Raft non-voter") }) {
		t.Errorf("a non-voter held back by MaxVoters reported stuck: %q", st.Problems)
	}
}
