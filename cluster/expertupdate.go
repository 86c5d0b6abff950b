package cluster

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/raft"
)

// DefaultExpertUpdateTimeout bounds how long an update waits for every
// replica to load the new version before it gives up (and cancels).
const DefaultExpertUpdateTimeout = 2 * time.Minute

// ErrNoPrevious means a rollback found no previous version to return to.
var ErrNoPrevious = errors.New("cluster: no previous version to roll back to")

// ExpertUpdateRequest is the body of POST /admin/v1/experts/update (Version
// required: the digest of an expert file stored on the receiving node) and
// of POST /admin/v1/experts/rollback (Version ignored).
type ExpertUpdateRequest struct {
	Expert    router.ExpertID `json:"expert"`
	Version   string          `json:"version,omitempty"`
	TimeoutMS int64           `json:"timeout_ms,omitempty"` // 0: DefaultExpertUpdateTimeout
}

// ExpertUpdateReply reports a finished update or rollback.
type ExpertUpdateReply struct {
	Expert   router.ExpertID      `json:"expert"`
	State    router.ExpertVersion `json:"state"`
	Replicas int                  `json:"replicas"`  // replicas serving the new version at the flip
	StagedMS int64                `json:"staged_ms"` // from the stage command to every replica loaded
	Epoch    uint64               `json:"epoch"`
	// Nodes are the live nodes when the flip committed, Applied those
	// that said they had applied it before the answer (each node's next
	// dispatch of the expert then uses the live version).
	Nodes   int `json:"nodes"`
	Applied int `json:"applied_nodes"`
}

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err == nil && len(b) > maxBody {
		err = fmt.Errorf("body over %d bytes", maxBody)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return b, nil
}

func decodeUpdate(b []byte) (ExpertUpdateRequest, error) {
	var req ExpertUpdateRequest
	err := json.Unmarshal(b, &req)
	if err == nil && (req.Expert.Layer < 0 || req.Expert.Index < 0 || req.TimeoutMS < 0) {
		err = errors.New("negative expert or timeout")
	}
	if err != nil {
		return req, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return req, nil
}

func (req ExpertUpdateRequest) timeout() time.Duration {
	if req.TimeoutMS > 0 {
		return time.Duration(req.TimeoutMS) * time.Millisecond
	}
	return DefaultExpertUpdateTimeout
}

// handleExpertUpdate is POST /admin/v1/experts/update: load Version beside
// the live version on every replica of Expert, then flip the map to it.
func (n *Node) handleExpertUpdate(w http.ResponseWriter, r *http.Request) {
	b, err := readBody(r)
	var req ExpertUpdateRequest
	if err == nil {
		req, err = decodeUpdate(b)
	}
	if err == nil && !validDigest(req.Version) {
		err = fmt.Errorf("%w: version %q is not an expert file digest", errBadRequest, req.Version)
	}
	if err == nil && !n.files.has(req.Version) {
		err = fmt.Errorf("%w: %w: %.12s is not stored on node %s (PUT it to /admin/v1/expert-files/{digest} first)",
			errBadRequest, ErrNoExpertFile, req.Version, n.cfg.ID)
	}
	if err == nil {
		err = n.checkExpertFile(req.Version, req.Expert)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	n.serveUpdate(w, r, req, req.Version, n.cfg.ID, false)
}

// checkExpertFile reports, before any replica is asked to load it, whether
// the stored file with digest holds expert id (and fits the model this node
// runs): a file of another expert, or of another shape, would only fail on
// every host and time the update out.
func (n *Node) checkExpertFile(digest string, id router.ExpertID) error {
	xf, err := n.files.load(digest)
	if err != nil {
		return fmt.Errorf("%w: %w: %w", errBadRequest, ErrExpertFile, err)
	}
	if xf.Layer != id.Layer || xf.Index != id.Index {
		return fmt.Errorf("%w: %w: %.12s holds expert %d of layer %d, not expert %d of layer %d",
			errBadRequest, ErrExpertFile, digest, xf.Index, xf.Layer, id.Index, id.Layer)
	}
	if x := n.xp.Load(); x != nil {
		if err := xf.Fits(x.w); err != nil {
			return fmt.Errorf("%w: %w: %w", errBadRequest, ErrExpertFile, err)
		}
	}
	return nil
}

// handleExpertRollback is POST /admin/v1/experts/rollback: flip Expert back
// to its previous version (loaded beside the live one since the update).
func (n *Node) handleExpertRollback(w http.ResponseWriter, r *http.Request) {
	b, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if n.raft.State() != raft.Leader {
		// The leader's map is the newest: a follower's may not show the
		// update being rolled back yet.
		n.proxyToLeader(w, r, b)
		return
	}
	req, err := decodeUpdate(b)
	if err != nil {
		writeError(w, err)
		return
	}
	v, ok := n.fsm.Map().ExpertVersions[req.Expert]
	if !ok || !v.HasPrev {
		writeError(w, fmt.Errorf("%w for expert %v", ErrNoPrevious, req.Expert))
		return
	}
	if v.RolledBack {
		// A second rollback would flip forward again (say, a retry).
		live := cmp.Or(v.Live, "base") // router.BaseVersion: the model file's
		writeError(w, fmt.Errorf("%w for expert %v: it was rolled back already (live: %.12s); update it to change the version",
			ErrNoPrevious, req.Expert, live))
		return
	}
	n.serveUpdate(w, r, req, v.Prev, "", true)
}

func (n *Node) serveUpdate(w http.ResponseWriter, r *http.Request, req ExpertUpdateRequest, version, source string, rollback bool) {
	ctx, cancel := context.WithTimeout(r.Context(), req.timeout())
	defer cancel()
	reply, err := n.updateExpert(ctx, req.Expert, version, source, rollback)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

// UpdateExpert makes version (an expert file digest, or
// router.BaseVersion) the live version of expert id without a pause: it
// stages it (every host of a replica loads it beside the live version and
// reports it), waits until every serving replica has it, then flips the map
// (router.OpFlipExpert). Requests already queued on the old version finish
// on it; hosts keep the old version loaded for a rollback. If ctx ends
// before every replica loaded it, the staging is cancelled and the live
// version stays. source names the node holding the expert file ("" keeps
// the recorded one).
func (n *Node) UpdateExpert(ctx context.Context, id router.ExpertID, version, source string) (ExpertUpdateReply, error) {
	return n.updateExpert(ctx, id, version, source, false)
}

// updateExpert is UpdateExpert; rollback marks the flip as one.
func (n *Node) updateExpert(ctx context.Context, id router.ExpertID, version, source string, rollback bool) (ExpertUpdateReply, error) {
	start := time.Now()
	stage := router.Command{Op: router.OpStageExpert, Expert: &id, Version: version, NodeID: source}
	if err := n.Apply(ctx, stage); err != nil {
		return ExpertUpdateReply{}, err
	}
	// This node's map may lag the leader's: the stage counts as superseded
	// only once this node has seen it applied.
	seen := false
	staged := func(m *router.Map) (have, want int) {
		v := m.ExpertVersions[id]
		if !seen && !v.Staging && m.LiveVersion(id) == version {
			return 0, -2 // live already: staging it changed nothing
		}
		if !v.Staging || v.Staged != version {
			if seen {
				return 0, -1 // superseded
			}
			return 0, 0
		}
		seen = true
		for _, r := range m.Placement[id] {
			if !r.Ready && !r.Staged {
				continue // not serving either way: it loads the live version after the flip
			}
			if nd, ok := m.Nodes[r.Node]; !ok || nd.State != router.NodeActive && nd.State != router.NodeDraining {
				continue
			}
			want++
			if r.Staged {
				have++
			}
		}
		return have, want
	}
	m := n.waitApplied(ctx, func(m *router.Map) bool {
		have, want := staged(m)
		return want < 0 || have > 0 && have == want
	})
	have, want := staged(m)
	switch {
	case want == -2:
		// Nothing to load or flip: answer at once (it was waiting out the
		// timeout for a staging that never starts).
		ready := 0
		for _, r := range m.Placement[id] {
			if r.Ready {
				ready++
			}
		}
		return ExpertUpdateReply{Expert: id, State: m.ExpertVersions[id], Replicas: ready, Epoch: m.Epoch}, nil
	case want < 0:
		return ExpertUpdateReply{}, fmt.Errorf("%w: expert %v: another update superseded version %.12s", ErrRejected, id, version)
	case have == 0 || have < want:
		n.unstage(id, version)
		return ExpertUpdateReply{}, fmt.Errorf("%w: expert %v version %.12s loaded on %d of %d replicas: %w",
			ErrRejected, id, version, have, want, context.DeadlineExceeded)
	}
	stagedFor := time.Since(start)
	if err := n.Apply(ctx, router.Command{Op: router.OpFlipExpert, Expert: &id, Version: version, Rollback: rollback}); err != nil {
		// The flip may or may not have committed (a timeout, a leader
		// change): cancel the staging if it is still there, rather than
		// leave the expert staging with both versions loaded. If the flip
		// did commit, the version is live and that is the answer.
		n.unstage(id, version)
		if v := n.fsm.Map().ExpertVersions[id]; v.Live != version || v.Staging {
			return ExpertUpdateReply{}, err
		}
	}
	m = n.waitApplied(ctx, func(m *router.Map) bool {
		v := m.ExpertVersions[id]
		return v.Live == version && !v.Staging
	})
	nodes, applied := n.waitNodesApplied(ctx, m)
	return ExpertUpdateReply{Expert: id, State: m.ExpertVersions[id], Replicas: have,
		StagedMS: stagedFor.Milliseconds(), Epoch: m.Epoch, Nodes: nodes, Applied: applied}, nil
}

// waitNodesApplied waits until every node that is not dead has applied m's
// epoch (this one has), asking them all at once, for at most half of
// ApplyTimeout (a follower applies within milliseconds; a node hung but not
// yet dead must not use up the time a proxied request has left): the
// caller's answer then means the change is in effect across the cluster,
// not only committed. It returns how many nodes there are and how many
// said so.
func (n *Node) waitNodesApplied(ctx context.Context, m *router.Map) (nodes, applied int) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout/2)
	defer cancel()
	var (
		wg  sync.WaitGroup
		got atomic.Int64
	)
	for id, nd := range m.Nodes {
		if nd.State == router.NodeDead {
			continue
		}
		nodes++
		if id == n.cfg.ID {
			got.Add(1)
			continue
		}
		wg.Add(1)
		go func(addr string) {
			defer wg.Done()
			ac := &AdminClient{Base: "http://" + addr, HTTP: n.client}
			if e, err := ac.AppliedEpoch(ctx, m.Epoch); err == nil && e >= m.Epoch {
				got.Add(1)
			}
		}(nd.HTTPAddr)
	}
	wg.Wait()
	return nodes, int(got.Load())
}

// unstage cancels the staging of version for id, if it is still the one
// staged, on a fresh deadline (the caller's may be spent).
func (n *Node) unstage(id router.ExpertID, version string) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ApplyTimeout)
	defer cancel()
	if err := n.Apply(ctx, router.Command{Op: router.OpStageExpert, Expert: &id, Version: version, Unstage: true}); err != nil {
		n.log.Warn("cancel an expert staging", "expert", id, "version", short(version), "error", err)
	}
}

// PutExpertFile uploads an expert file (PUT /admin/v1/expert-files/{digest}).
func (c *AdminClient) PutExpertFile(ctx context.Context, digest string, data []byte) (ExpertFileReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut,
		strings.TrimRight(c.Base, "/")+"/admin/v1/expert-files/"+digest, bytes.NewReader(data))
	if err != nil {
		return ExpertFileReply{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	var r ExpertFileReply
	return r, c.send(req, "/admin/v1/expert-files", &r)
}

// UpdateExpert asks the node to make version (an expert file it stores)
// expert id's live version (POST /admin/v1/experts/update).
func (c *AdminClient) UpdateExpert(ctx context.Context, req ExpertUpdateRequest) (ExpertUpdateReply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return ExpertUpdateReply{}, err
	}
	var r ExpertUpdateReply
	return r, c.do(ctx, http.MethodPost, "/admin/v1/experts/update", b, nil, &r)
}

// RollbackExpert flips expert id back to its previous version (POST
// /admin/v1/experts/rollback).
func (c *AdminClient) RollbackExpert(ctx context.Context, req ExpertUpdateRequest) (ExpertUpdateReply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return ExpertUpdateReply{}, err
	}
	var r ExpertUpdateReply
	return r, c.do(ctx, http.MethodPost, "/admin/v1/experts/rollback", b, nil, &r)
}
