package cluster_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/raft"
)

// startNode starts cfg (retrying while its ports are released) and kills
// it when the test ends.
func startNode(t *testing.T, cfg cluster.Config, tag string) *cluster.Node {
	t.Helper()
	cfg.Logger = cluster.NewLogger(cfg.ID+"-"+tag, testWriter{t}, "off")
	var n *cluster.Node
	clustertest.WaitFor(t, 10*time.Second, func() bool {
		var err error
		n, err = cluster.Start(cfg)
		return err == nil
	}, cfg.ID+" to start")
	t.Cleanup(func() { n.Kill() })
	return n
}

func leaderOf(ns ...*cluster.Node) *cluster.Node {
	for _, n := range ns {
		if n != nil && n.IsLeader() {
			return n
		}
	}
	return nil
}

// voters is n's Raft configuration: ID → whether a voter.
func voters(t *testing.T, n *cluster.Node) map[string]bool {
	t.Helper()
	f := n.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		out[string(s.ID)] = s.Suffrage == raft.Voter
	}
	return out
}

// recoveredPair builds 3 nodes, stops them gracefully with n2 (the leader)
// last, as if n2 were then lost, and restarts n0 and n1 with RaftRecover
// naming both: it returns them, their configs and the list.
func recoveredPair(t *testing.T) ([]*cluster.Node, []cluster.Config, []cluster.RaftPeer) {
	c := clustertest.New(t, 3, clustertest.Options{})
	if l := c.WaitLeader(10 * time.Second); l != 2 {
		if err := c.Node(l).Raft().LeadershipTransferToServer("n2", raft.ServerAddress(c.Config(2).RaftAddr)).Error(); err != nil {
			t.Fatal(err)
		}
		clustertest.WaitFor(t, 10*time.Second, func() bool { return c.Node(2).IsLeader() }, "n2 to lead")
	}
	c.Stop(0)
	c.Stop(1)
	c.Stop(2)
	cfgs := []cluster.Config{c.Config(0), c.Config(1)}
	var list []cluster.RaftPeer
	for _, cfg := range cfgs {
		list = append(list, cluster.RaftPeer{ID: cfg.ID, Addr: cfg.RaftAddr})
	}
	var ns []*cluster.Node
	for _, cfg := range cfgs {
		cfg.RaftRecover = list
		ns = append(ns, startNode(t, cfg, "recovered"))
	}
	clustertest.WaitFor(t, 15*time.Second, func() bool { return leaderOf(ns...) != nil }, "a leader after the recovery")
	return ns, cfgs, list
}

// addVoter starts a new node n3 joining the recovered pair and waits until
// it is a voter and leads.
func addVoter(t *testing.T, ns []*cluster.Node, cfgs []cluster.Config) *cluster.Node {
	cfg := clustertest.FastConfig()
	cfg.ID, cfg.DataDir = "n3", filepath.Join(t.TempDir(), "n3")
	a := clustertest.FreeAddrs(t, 4)
	cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr = a[0], a[1], a[2], a[3]
	cfg.Join = []string{cfgs[0].GossipAddr}
	n3 := startNode(t, cfg, "new")
	clustertest.WaitFor(t, 20*time.Second, func() bool {
		l := leaderOf(ns...)
		return l != nil && voters(t, l)["n3"]
	}, "n3 to become a voter")
	if err := leaderOf(ns...).Raft().LeadershipTransferToServer("n3", raft.ServerAddress(cfg.RaftAddr)).Error(); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 10*time.Second, func() bool { return n3.IsLeader() }, "n3 to lead")
	return n3
}

// TestRaftRecover: a 3-node cluster stopped gracefully, one node after
// another, keeps only its last leader as a voter (each leave removed a
// voter); the two others restarted without it elect no leader. Restarted
// with RaftRecover naming both, they do, and the map is the one they had.
func TestRaftRecover(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	c.WaitActive(10*time.Second, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mod := router.Model{ID: "recover-moe", Version: 1, Layers: 2, Experts: 4, TopK: 2, ExpertBytes: 1 << 20, Live: true}
	if err := c.Apply(ctx, router.Command{Op: router.OpSetModel, Model: &mod}); err != nil {
		t.Fatal(err)
	}
	l := c.WaitLeader(10 * time.Second)
	epoch := c.Node(l).Map().Epoch
	var cfgs []cluster.Config
	var list []cluster.RaftPeer
	for i := range 3 {
		if i != l {
			c.Stop(i)
			cfgs = append(cfgs, c.Config(i))
			list = append(list, cluster.RaftPeer{ID: c.Config(i).ID, Addr: c.Config(i).RaftAddr})
		}
	}
	c.Stop(l)
	var ns []*cluster.Node
	for _, cfg := range cfgs {
		ns = append(ns, startNode(t, cfg, "plain"))
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && leaderOf(ns...) == nil {
		time.Sleep(50 * time.Millisecond)
	}
	if leaderOf(ns...) != nil {
		t.Logf("the two restarted nodes found a leader without recovery")
	}
	for _, n := range ns {
		n.Kill()
	}
	ns = nil
	for _, cfg := range cfgs {
		cfg.RaftRecover = list
		ns = append(ns, startNode(t, cfg, "recovered"))
	}
	clustertest.WaitFor(t, 15*time.Second, func() bool { return leaderOf(ns...) != nil }, "a leader among the recovered nodes")
	for _, n := range ns {
		clustertest.WaitFor(t, 10*time.Second, func() bool {
			m := n.Map()
			return m.Model != nil && m.Model.ID == "recover-moe" && m.Epoch >= epoch
		}, n.ID()+"'s map to keep the model")
	}
}

// TestRaftRecoverFlagLeftOn: a recovered node restarted with the flag still
// given (its peers even in another order) while it is a voter does not
// recover again, which would drop the voter added since.
func TestRaftRecoverFlagLeftOn(t *testing.T) {
	ns, cfgs, list := recoveredPair(t)
	addVoter(t, ns, cfgs)
	ns[0].Kill()
	cfg := cfgs[0]
	cfg.RaftRecover = []cluster.RaftPeer{list[1], list[0]}
	n0 := startNode(t, cfg, "flag-left-on")
	if v := voters(t, n0); !v["n3"] {
		t.Errorf("n0 recovered again and dropped voter n3: its configuration %v", v)
	}
}

// TestRaftRecoverTwice: the same survivors lose their last voter a second
// time (a node-by-node stop led by n3, then n3 lost); the same flag
// recovers them again.
func TestRaftRecoverTwice(t *testing.T) {
	ns, cfgs, list := recoveredPair(t)
	n3 := addVoter(t, ns, cfgs)
	for _, n := range []*cluster.Node{ns[0], ns[1], n3} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := n.Leave(ctx); err != nil {
			t.Logf("leave %s: %v", n.ID(), err)
		}
		cancel()
	}
	ns = nil
	for _, cfg := range cfgs {
		cfg.RaftRecover = list
		ns = append(ns, startNode(t, cfg, "second"))
	}
	clustertest.WaitFor(t, 15*time.Second, func() bool { return leaderOf(ns...) != nil }, "a leader after the second recovery")
}
