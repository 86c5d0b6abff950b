package cluster_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
)

// TestHealthMetrics scrapes the Raft and membership collector of a leader
// and a follower of a 3-node cluster.
func TestHealthMetrics(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	c.WaitActive(10*time.Second, 3)
	l := c.WaitLeader(10 * time.Second)
	f := (l + 1) % 3
	for _, tc := range []struct {
		name  string
		node  int
		state string
	}{{"leader", l, "leader"}, {"follower", f, "follower"}} {
		t.Run(tc.name, func(t *testing.T) {
			// Gossip may still be settling after the map shows 3 active
			// nodes; wait until this node sees every member alive.
			clustertest.WaitFor(t, 10*time.Second, func() bool {
				alive := 0
				for _, s := range c.Node(tc.node).Members() {
					if s == cluster.GossipAlive {
						alive++
					}
				}
				return alive == 3
			}, "all 3 members alive in gossip")
			got := gather(t, c.Node(tc.node))
			if got["conclave:raft_has_leader"] != 1 {
				t.Errorf("raft_has_leader = %v, want 1", got["conclave:raft_has_leader"])
			}
			if got["conclave:raft_state/"+tc.state] != 1 {
				t.Errorf("raft_state{%s} = %v, want 1 (%v)", tc.state, got["conclave:raft_state/"+tc.state], got)
			}
			if got["conclave:cluster_members/alive"] != 3 || got["conclave:cluster_nodes/active"] != 3 {
				t.Errorf("members alive %v, map nodes active %v; want 3 and 3", got["conclave:cluster_members/alive"], got["conclave:cluster_nodes/active"])
			}
			if got["conclave:raft_term"] < 1 || got["conclave:cluster_map_epoch"] < 1 || got["conclave:raft_index/applied"] < 1 {
				t.Errorf("term %v, epoch %v, applied %v; want all ≥ 1", got["conclave:raft_term"], got["conclave:cluster_map_epoch"], got["conclave:raft_index/applied"])
			}
			if got["conclave:raft_voters/healthy"] != 3 || got["conclave:raft_voters/unhealthy"] != 0 || got["conclave:raft_failure_tolerance"] != 1 {
				t.Errorf("voters healthy %v unhealthy %v, failure tolerance %v; want 3, 0, 1", got["conclave:raft_voters/healthy"],
					got["conclave:raft_voters/unhealthy"], got["conclave:raft_failure_tolerance"])
			}
			if lc, ok := got["conclave:raft_last_contact_seconds"]; !ok || lc < 0 || lc > 5 || tc.state == "leader" && lc != 0 {
				t.Errorf("raft_last_contact_seconds %v (present %v)", lc, ok)
			}
		})
	}
	// A voter dies: the cluster still has its quorum but can lose no more
	// voters, first with the dead voter in the configuration, then without.
	c.Kill(f)
	clustertest.WaitFor(t, 20*time.Second, func() bool {
		got := gather(t, c.Node(l))
		return got["conclave:raft_failure_tolerance"] == 0 && got["conclave:raft_voters/unhealthy"] == 1
	}, "failure tolerance 0 with one unhealthy voter")
	clustertest.WaitFor(t, 30*time.Second, func() bool {
		got := gather(t, c.Node(l))
		return got["conclave:raft_voters/healthy"] == 2 && got["conclave:raft_voters/unhealthy"] == 0
	}, "the dead voter removed")
	if got := gather(t, c.Node(l)); got["conclave:raft_failure_tolerance"] != 0 {
		t.Errorf("two voters: failure tolerance %v, want 0", got["conclave:raft_failure_tolerance"])
	}
}

// gather scrapes n's collector into name/label…/label → value.
func gather(t *testing.T, n *cluster.Node) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				key += "/" + lp.GetValue()
			}
			got[key] = m.GetGauge().GetValue()
		}
	}
	return got
}
