package cluster

import (
	"strconv"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Raft and membership health as Prometheus metrics, read at scrape time
// (no background work). Series are bounded by the fixed sets of Raft
// states, gossip states and node states.
var (
	descRaftState = prometheus.NewDesc("conclave:raft_state",
		"1 for this node's current Raft state (follower, candidate, leader, shutdown).", []string{"state"}, nil)
	descRaftTerm = prometheus.NewDesc("conclave:raft_term",
		"Current Raft term.", nil, nil)
	descRaftIndex = prometheus.NewDesc("conclave:raft_index",
		"Raft log indexes: last log entry, last applied, commit.", []string{"kind"}, nil)
	descRaftLeader = prometheus.NewDesc("conclave:raft_has_leader",
		"1 when this node knows a Raft leader.", nil, nil)
	descMembers = prometheus.NewDesc("conclave:cluster_members",
		"Gossip members this node sees, by state.", []string{"state"}, nil)
	descMapNodes = prometheus.NewDesc("conclave:cluster_nodes",
		"Nodes in the cluster map, by state.", []string{"state"}, nil)
	descEpoch = prometheus.NewDesc("conclave:cluster_map_epoch",
		"Epoch of the cluster map this node has applied.", nil, nil)
)

type nodeCollector Node

// Collector returns a Prometheus collector for the node's Raft and
// membership health.
func (n *Node) Collector() prometheus.Collector { return (*nodeCollector)(n) }

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftTerm, descRaftIndex, descRaftLeader, descMembers, descMapNodes, descEpoch} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := (*Node)(c)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if r := n.raft; r != nil {
		cur := r.State()
		for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
			v := 0.0
			if s == cur {
				v = 1
			}
			gauge(descRaftState, v, stateName(s))
		}
		stats := r.Stats()
		if t, err := strconv.ParseUint(stats["term"], 10, 64); err == nil {
			gauge(descRaftTerm, float64(t))
		}
		for kind, key := range map[string]string{"last_log": "last_log_index", "applied": "applied_index", "commit": "commit_index"} {
			if v, err := strconv.ParseUint(stats[key], 10, 64); err == nil {
				gauge(descRaftIndex, float64(v), kind)
			}
		}
		leader := 0.0
		if addr, _ := r.LeaderWithID(); addr != "" {
			leader = 1
		}
		gauge(descRaftLeader, leader)
	}
	counts := map[GossipState]int{GossipAlive: 0, GossipDead: 0, GossipLeft: 0}
	for _, s := range n.Members() {
		counts[s]++
	}
	for s, v := range counts {
		gauge(descMembers, float64(v), string(s))
	}
	m := n.fsm.Map()
	gauge(descEpoch, float64(m.Epoch))
	byState := map[string]int{"joining": 0, "active": 0, "draining": 0, "dead": 0}
	for _, nd := range m.Nodes {
		byState[string(nd.State)]++
	}
	for s, v := range byState {
		gauge(descMapNodes, float64(v), s)
	}
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Leader:
		return "leader"
	}
	return "shutdown"
}
