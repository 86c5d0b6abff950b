package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/raft"
)

// The admin API (plain HTTP, JSON):
//
//	GET  /healthz                 200 when a leader is known, else 503
//	GET  /admin/v1/status         Status
//	GET  /admin/v1/nodes          NodesReply
//	GET  /admin/v1/experts        ExpertsReply
//	GET  /admin/v1/map            the router.Map as JSON
//	POST /admin/v1/drain/{node}   set the node draining; its sessions move (202, DrainReply)
//	POST /admin/v1/rebalance      run placement with Rebalance (RebalanceReply)
//	POST /admin/v1/apply          body: an encoded router.Command (ApplyReply)
//	POST /admin/v1/leave/{node}   leader only: remove a leaving node from Raft and the map
//	POST /admin/v1/model          body: a router.Model; make it the live model (ModelReply)
//
// Errors are {"error":{"message":…,"type":…}} with the status of errorType.

// forwardedHeader marks a request forwarded by a follower; the receiver must
// not forward it again (it answers not_leader instead).
const forwardedHeader = "X-Conclave-Forwarded"

// maxBody bounds request bodies (bytes).
const maxBody = 4 << 20

// Status is GET /admin/v1/status.
type Status struct {
	Node         string       `json:"node"`       // the node answering
	RaftState    string       `json:"raft_state"` // Leader, Follower, Candidate, Shutdown
	Leader       string       `json:"leader"`     // leader's node id, "" if none known
	LeaderHTTP   string       `json:"leader_http,omitempty"`
	Term         uint64       `json:"term"`
	Epoch        uint64       `json:"epoch"`
	AppliedIndex uint64       `json:"applied_index"`
	Model        string       `json:"model,omitempty"`
	ModelDigest  string       `json:"model_digest,omitempty"` // the live model's file
	Replication  int          `json:"replication"`
	Experts      int          `json:"experts"`  // experts with at least one replica
	Sessions     int          `json:"sessions"` // sessions in the map
	Health       string       `json:"health"`   // ok, degraded, no_leader
	Problems     []string     `json:"problems,omitempty"`
	Nodes        []NodeStatus `json:"nodes"`
	// ModelFile is the answering node's own model file (the live model's,
	// or another a node still runs: compare Digest with ModelDigest); nil
	// when it has none.
	ModelFile *ModelFileStatus `json:"model_file,omitempty"`
}

// ModelFileStatus describes a node's copy of a model file: "held" (the
// complete file, started with --model; it serves chunks to peers) or
// "partial" (fetched from peers: the dense part and the experts placed on
// it so far).
type ModelFileStatus struct {
	Digest string `json:"digest"`
	State  string `json:"state"` // held or partial
	CopyStats
}

// NodeStatus is a map node with this node's gossip view and its load.
type NodeStatus struct {
	router.Node
	Gossip   GossipState `json:"gossip"`
	Experts  int         `json:"experts"`
	Sessions int         `json:"sessions"`
}

// NodesReply is GET /admin/v1/nodes.
type NodesReply struct {
	Epoch uint64       `json:"epoch"`
	Nodes []NodeStatus `json:"nodes"`
}

// ExpertsReply is GET /admin/v1/experts.
type ExpertsReply struct {
	Epoch       uint64                  `json:"epoch"`
	Model       *router.Model           `json:"model,omitempty"`
	Replication int                     `json:"replication"`
	Placement   []router.PlacementEntry `json:"placement"`
	// Versions lists the experts whose weights were hot-updated (or are
	// being updated).
	Versions []router.ExpertVersionEntry `json:"versions,omitempty"`
}

// DrainReply is POST /admin/v1/drain/{node}.
type DrainReply struct {
	Node     string `json:"node"`
	State    string `json:"state"`
	Epoch    uint64 `json:"epoch"`
	Experts  int    `json:"experts"`
	Sessions int    `json:"sessions"`
}

// RebalanceReply is POST /admin/v1/rebalance.
type RebalanceReply struct {
	Moves int    `json:"moves"`
	Epoch uint64 `json:"epoch"`
}

// ApplyReply is POST /admin/v1/apply.
type ApplyReply struct {
	Epoch uint64 `json:"epoch"` // the answering node's epoch after the commit
}

func (n *Node) registerAdmin() {
	n.mux.HandleFunc("GET /healthz", n.handleHealth)
	n.mux.HandleFunc("GET /admin/v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, n.Status()) })
	n.mux.HandleFunc("GET /admin/v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		m := n.fsm.Map()
		writeJSON(w, http.StatusOK, NodesReply{Epoch: m.Epoch, Nodes: n.nodeStatuses(m)})
	})
	n.mux.HandleFunc("GET /admin/v1/experts", func(w http.ResponseWriter, r *http.Request) {
		m := n.fsm.Map()
		writeJSON(w, http.StatusOK, ExpertsReply{Epoch: m.Epoch, Model: m.Model, Replication: m.Replication, Placement: m.PlacementList(),
			Versions: m.ExpertVersionList()})
	})
	n.mux.HandleFunc("GET /admin/v1/map", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, n.fsm.Map()) })
	n.mux.HandleFunc("GET /admin/v1/epoch", n.handleEpoch)
	n.mux.HandleFunc("POST /admin/v1/drain/{node}", n.handleDrain)
	n.mux.HandleFunc("POST /admin/v1/rebalance", n.handleRebalance)
	n.mux.HandleFunc("POST /admin/v1/apply", n.handleApply)
	n.mux.HandleFunc("POST /admin/v1/leave/{node}", n.handleLeave)
	n.mux.HandleFunc("POST /admin/v1/model", n.handleModel)
	n.mux.HandleFunc("PUT /admin/v1/expert-files/{digest}", n.handlePutExpertFile)
	n.mux.HandleFunc("GET /admin/v1/expert-files/{digest}", n.handleGetExpertFile)
	n.mux.HandleFunc("POST /admin/v1/experts/update", n.handleExpertUpdate)
	n.mux.HandleFunc("POST /admin/v1/experts/rollback", n.handleExpertRollback)
	n.mux.HandleFunc("GET /admin/v1/models/{digest}/manifest", n.handleManifest)
	n.mux.HandleFunc("GET /admin/v1/models/{digest}/chunks/{i}", n.handleChunk)
}

func (n *Node) handleHealth(w http.ResponseWriter, r *http.Request) {
	if l := n.Leader(); l != "" {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": n.cfg.ID, "leader": l})
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "no_leader", "node": n.cfg.ID})
}

// stuckNonVoter is how long an active node alive in gossip may stay a
// non-voter, with room for voters, before Status calls it a problem.
var stuckNonVoter atomic.Int64 // ns; 30 s unless a test sets it

func init() { stuckNonVoter.Store(int64(30 * time.Second)) }

// Status summarises the cluster as this node sees it.
func (n *Node) Status() Status {
	m := n.fsm.Map()
	st := Status{
		Node:         n.cfg.ID,
		RaftState:    n.raft.State().String(),
		Leader:       n.Leader(),
		LeaderHTTP:   n.leaderHTTP(),
		Term:         n.raft.CurrentTerm(),
		Epoch:        m.Epoch,
		AppliedIndex: n.raft.AppliedIndex(),
		Replication:  m.Replication,
		Experts:      len(m.Placement),
		Sessions:     m.Sessions.Len(),
		Nodes:        n.nodeStatuses(m),
	}
	if m.Model != nil {
		st.Model, st.ModelDigest = m.Model.ID, m.Model.Digest
	}
	st.ModelFile = n.modelFileStatus()
	// Voters as the leader counts them when it promotes: every voter not
	// dead (a draining one still votes).
	voters := 0
	for _, ns := range st.Nodes {
		if ns.Voter && ns.State != router.NodeDead {
			voters++
		}
	}
	tab, _ := n.members.snapshot()
	for _, ns := range st.Nodes {
		// Promotion takes well under a second once Raft reaches a node:
		// one alive in gossip for longer (by this node's clock) and still
		// waiting, with room for voters, leaves the cluster a voter short.
		if mem, ok := tab[ns.ID]; ok && mem.State == GossipAlive && ns.State == router.NodeActive && !ns.Voter &&
			voters < n.cfg.MaxVoters && time.Since(mem.Since) > time.Duration(stuckNonVoter.Load()) {
			st.Problems = append(st.Problems, fmt.Sprintf("node %s is still a Raft non-voter %v after it joined, with %d of %d voters: the leader has not heard that Raft reaches it (check its raft address and certificate; restarting it retries)",
				ns.ID, time.Since(mem.Since).Round(time.Second), voters, n.cfg.MaxVoters))
		}
		switch {
		case ns.State == router.NodeDead:
			st.Problems = append(st.Problems, fmt.Sprintf("node %s is dead", ns.ID))
		case ns.State == router.NodeActive && m.Model != nil && m.Model.Live && ns.Serving != "" && ns.Serving != m.Model.Digest:
			// Its weights are another model's (the one before a switch,
			// or the next one before its model load): it answers 503
			// model_not_live, and its sessions with it.
			st.Problems = append(st.Problems, fmt.Sprintf("node %s runs model %.12s, not the live %s: restart it to serve %s, or make its model live with model load",
				ns.ID, ns.Serving, m.Model.ID, m.Model.ID))
		}
	}
	if m.Model != nil && m.Model.Experts > 0 {
		want := m.Model.Layers * m.Model.Experts
		short, unready := 0, 0
		for _, pe := range m.PlacementList() {
			if len(pe.Replicas) < min(m.Replication, len(m.ActiveNodes())) {
				short++
			}
			if !slices.ContainsFunc(pe.Replicas, func(r router.Replica) bool { return r.Ready }) {
				unready++
			}
		}
		if missing := want - len(m.Placement); missing > 0 {
			st.Problems = append(st.Problems, fmt.Sprintf("%d of %d experts have no replica", missing, want))
		}
		if unready > 0 {
			// Placed but not loaded anywhere yet (a node still fetching or
			// loading): requests that route to them wait or fail.
			st.Problems = append(st.Problems, fmt.Sprintf("%d experts have no ready replica", unready))
		}
		if short > 0 {
			st.Problems = append(st.Problems, fmt.Sprintf("%d experts are under-replicated", short))
		}
	}
	switch {
	case st.Leader == "":
		st.Health = "no_leader"
	case len(st.Problems) > 0:
		st.Health = "degraded"
	default:
		st.Health = "ok"
	}
	return st
}

func (n *Node) nodeStatuses(m *router.Map) []NodeStatus {
	tab, _ := n.members.snapshot()
	var out []NodeStatus
	for id, nd := range m.Nodes {
		g := GossipUnknown
		if mem, ok := tab[id]; ok {
			g = mem.State
		}
		out = append(out, NodeStatus{Node: nd, Gossip: g, Experts: len(m.ExpertsOn(id)), Sessions: len(m.SessionsOn(id))})
	}
	slices.SortFunc(out, func(a, b NodeStatus) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

func (n *Node) handleDrain(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("node")
	m := n.fsm.Map()
	if _, ok := m.Nodes[id]; !ok {
		writeError(w, fmt.Errorf("%w %q", ErrUnknownNode, id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 4*n.cfg.ApplyTimeout)
	defer cancel()
	// What the drain moves: the node's sessions in the cluster's map as of
	// now. A follower's own map may lag what is committed (Apply's doc),
	// and once the node is draining the leader's reconcile may move them
	// before this node sees them, so count after catching up, before.
	if err := n.WaitCaughtUp(ctx); err != nil {
		writeError(w, err)
		return
	}
	sessions := len(n.fsm.Map().SessionsOn(id))
	// Not the last active node: its experts and sessions would have nowhere
	// to go, and the drain would never finish. The map decides, so two
	// drains at once cannot both pass.
	if err := n.Apply(ctx, router.Command{Op: router.OpSetNodeState, NodeID: id, State: router.NodeDraining, OthersActive: true}); err != nil {
		writeError(w, err)
		return
	}
	if err := n.Apply(ctx, router.Command{Op: router.OpMoveSessions, NodeID: id}); err != nil && !errors.Is(err, router.ErrNoActiveNode) {
		writeError(w, err)
		return
	}
	m = n.waitApplied(ctx, func(m *router.Map) bool { return m.Nodes[id].State == router.NodeDraining })
	writeJSON(w, http.StatusAccepted, DrainReply{Node: id, State: string(m.Nodes[id].State), Epoch: m.Epoch,
		Experts: len(m.ExpertsOn(id)), Sessions: sessions})
}

// waitApplied waits until cond holds on the local map or ctx ends, and
// returns the map it last saw.
func (n *Node) waitApplied(ctx context.Context, cond func(*router.Map) bool) *router.Map {
	for {
		ch := n.fsm.Changed()
		m := n.fsm.Map()
		if cond(m) {
			return m
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return n.fsm.Map()
		}
	}
}

// handleEpoch answers the leader's map epoch after a barrier (everything
// committed applied): what a follower's map must reach to be current. With
// ?applied=E it answers this node's own epoch instead, once it is E or more
// (or when ApplyTimeout runs out): how the leader learns that a change it
// committed is in effect on a node.
func (n *Node) handleEpoch(w http.ResponseWriter, r *http.Request) {
	if q := r.URL.Query().Get("applied"); q != "" {
		want, err := strconv.ParseUint(q, 10, 64)
		if err != nil {
			writeError(w, fmt.Errorf("%w: applied=%q is not an epoch", errBadRequest, q))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), n.cfg.ApplyTimeout)
		defer cancel()
		m := n.waitApplied(ctx, func(m *router.Map) bool { return m.Epoch >= want })
		writeJSON(w, http.StatusOK, EpochReply{Epoch: m.Epoch})
		return
	}
	if n.raft.State() != raft.Leader {
		n.proxyToLeader(w, r, nil)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.ApplyTimeout)
	defer cancel()
	if err := waitFuture(ctx, n.raft.Barrier(n.cfg.ApplyTimeout)); err != nil {
		writeError(w, translateRaftErr(err))
		return
	}
	writeJSON(w, http.StatusOK, EpochReply{Epoch: n.fsm.Map().Epoch})
}

func (n *Node) handleRebalance(w http.ResponseWriter, r *http.Request) {
	if n.raft.State() != raft.Leader {
		n.proxyToLeader(w, r, nil)
		return
	}
	moves, err := n.place(true)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, RebalanceReply{Moves: moves, Epoch: n.fsm.Map().Epoch})
}

func (n *Node) handleLeave(w http.ResponseWriter, r *http.Request) {
	if n.raft.State() != raft.Leader {
		if r.Header.Get(forwardedHeader) != "" {
			writeError(w, ErrNotLeader)
			return
		}
		n.proxyToLeader(w, r, nil)
		return
	}
	// A node neither the map nor Raft knows is a typo, as for drain: 404,
	// not a removal that did nothing. One that is in only one of them
	// (a removal cut short) is removed from the other.
	id := r.PathValue("node")
	if _, ok := n.fsm.Map().Nodes[id]; !ok && !n.raftServer(id) {
		writeError(w, fmt.Errorf("%w %q", ErrUnknownNode, id))
		return
	}
	if err := n.removeNode(id); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ApplyReply{Epoch: n.fsm.Map().Epoch})
}

func (n *Node) handleApply(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	if len(b) > maxBody {
		writeError(w, fmt.Errorf("%w: body over %d bytes", errBadRequest, maxBody))
		return
	}
	c, err := router.DecodeCommand(b)
	if err != nil {
		writeError(w, fmt.Errorf("%w: %w", ErrRejected, err))
		return
	}
	if r.Header.Get(forwardedHeader) != "" {
		// One hop only: the sender believed we lead.
		if n.raft.State() != raft.Leader {
			writeError(w, ErrNotLeader)
			return
		}
		if err := n.applyLocal(r.Context(), b); err != nil {
			writeError(w, err)
			return
		}
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), 4*n.cfg.ApplyTimeout)
		defer cancel()
		if err := n.Apply(ctx, c); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, ApplyReply{Epoch: n.fsm.Map().Epoch})
}

// proxyToLeader forwards a request (with body, which may be nil) to the
// leader once.
func (n *Node) proxyToLeader(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Header.Get(forwardedHeader) != "" {
		writeError(w, ErrNotLeader)
		return
	}
	addr := n.leaderHTTP()
	if addr == "" {
		writeError(w, ErrNoLeader)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+addr+r.URL.RequestURI(), rd)
	if err != nil {
		writeError(w, err)
		return
	}
	req.Header.Set(forwardedHeader, n.cfg.ID)
	if a := r.Header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a) // the caller's, not this node's
	} else if signedByPeer(r) {
		n.auth.sign(req, body) // a peer's call: signed on as this node
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.proxyHTTP.Do(req)
	if err != nil {
		writeError(w, fmt.Errorf("%w: %v", ErrNoLeader, err))
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// errBadRequest marks malformed requests (400).
var errBadRequest = errors.New("bad request")

// errorType maps an error to the admin API's error type and HTTP status.
func errorType(err error) (string, int) {
	switch {
	case errors.Is(err, errBadRequest), errors.Is(err, router.ErrBadCommand):
		return "invalid_request", http.StatusBadRequest
	case errors.Is(err, router.ErrUnknownNode):
		return "unknown_node", http.StatusNotFound
	case errors.Is(err, router.ErrUnknownSession):
		return "unknown_session", http.StatusNotFound
	case errors.Is(err, router.ErrUnknownReplica):
		return "unknown_replica", http.StatusNotFound
	case errors.Is(err, ErrNoExpertFile):
		return "not_found", http.StatusNotFound
	case errors.Is(err, router.ErrNoActiveNode):
		return "no_active_node", http.StatusConflict
	case errors.Is(err, ErrNotHeld):
		return "not_held", http.StatusNotFound
	case errors.Is(err, ErrNoHost):
		return "no_host", http.StatusConflict
	case errors.Is(err, ErrRejected), errors.Is(err, ErrNoPrevious), errors.Is(err, router.ErrNotStaged),
		errors.Is(err, router.ErrStaleVersion):
		return "rejected", http.StatusConflict
	case errors.Is(err, ErrNotLeader):
		return "not_leader", http.StatusServiceUnavailable
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrStopped):
		return "unavailable", http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout", http.StatusGatewayTimeout
	}
	return "internal", http.StatusInternalServerError
}

type errorBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	var b errorBody
	b.Error.Type, _ = errorType(err)
	_, status := errorType(err)
	b.Error.Message = err.Error()
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":{"message":"encode","type":"internal"}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
