package cluster

import (
	"strconv"
	"time"

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
	descVoters = prometheus.NewDesc("conclave:raft_voters",
		"Raft voters in the configuration, by health as this node sees it (healthy: itself, or alive in gossip).", []string{"health"}, nil)
	descTolerance = prometheus.NewDesc("conclave:raft_failure_tolerance",
		"How many more voters may fail before the cluster loses its Raft quorum: healthy voters minus the quorum (0 when at or below it).", nil, nil)
	descLastContact = prometheus.NewDesc("conclave:raft_last_contact_seconds",
		"Seconds since a follower last heard from its leader (0 on the leader; absent before any contact).", nil, nil)
)

type nodeCollector Node

// Collector returns a Prometheus collector for the node's Raft and
// membership health.
func (n *Node) Collector() prometheus.Collector { return (*nodeCollector)(n) }

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftTerm, descRaftIndex, descRaftLeader, descMembers, descMapNodes, descEpoch,
		descVoters, descTolerance, descLastContact} {
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
		switch lc := stats["last_contact"]; {
		case cur == raft.Leader:
			gauge(descLastContact, 0)
		case lc != "" && lc != "never":
			if d, err := time.ParseDuration(lc); err == nil {
				gauge(descLastContact, d.Seconds())
			}
		}
	}
	members := n.Members()
	if r := n.raft; r != nil {
		if f := r.GetConfiguration(); f.Error() == nil {
			voters, healthy := 0, 0
			for _, s := range f.Configuration().Servers {
				if s.Suffrage != raft.Voter {
					continue
				}
				voters++
				if string(s.ID) == n.cfg.ID || members[string(s.ID)] == GossipAlive {
					healthy++
				}
			}
			gauge(descVoters, float64(healthy), "healthy")
			gauge(descVoters, float64(voters-healthy), "unhealthy")
			gauge(descTolerance, float64(max(0, healthy-(voters/2+1))))
		}
	}
	counts := map[GossipState]int{GossipAlive: 0, GossipDead: 0, GossipLeft: 0}
	for _, s := range members {
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
