package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/conclave-ai/conclave/router"
)

// ErrNoHost means no live node of the cluster has a model file with the
// digest of the model asked for: nobody could host its experts.
var ErrNoHost = errors.New("cluster: no node has the model file")

// ModelReply is POST /admin/v1/model.
type ModelReply struct {
	Model router.Model `json:"model"`
	Epoch uint64       `json:"epoch"`
	Hosts []string     `json:"hosts"` // nodes whose model file has the digest, sorted
}

// ReadyExperts counts the experts of m's live model that have at least one
// ready replica on a node that serves expert calls (active or draining, as
// PickReplica has it) (ready) out of all its experts (total = layers ×
// experts). Without a live model both are 0; a dense model has total 0.
func ReadyExperts(m *router.Map) (ready, total int) {
	mod := m.Model
	if mod == nil || mod.Experts <= 0 || mod.Layers <= 0 {
		return 0, 0
	}
	for l := 0; l < mod.Layers; l++ {
		for e := 0; e < mod.Experts; e++ {
			for _, r := range m.Placement[router.ExpertID{Layer: l, Index: e}] {
				if st := m.Nodes[r.Node].State; r.Ready && (st == router.NodeActive || st == router.NodeDraining) {
					ready++
					break
				}
			}
		}
	}
	return ready, mod.Layers * mod.Experts
}

// ModelHosts returns the nodes of m, not dead, whose model file has digest
// (NodeMeta's model digests), sorted.
func ModelHosts(m *router.Map, digest string) []string {
	var out []string
	for id, nd := range m.Nodes {
		if nd.State != router.NodeDead && slices.Contains(nd.Models, digest) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Ready reports whether this node can serve the map's live model now: it is
// the model this node's weights hold, and every one of its experts has at
// least one ready replica somewhere in the cluster. With the engine's
// warm-up having run, it is the API's readiness (api.Config.ModelReady).
func (x *Experts) Ready() bool {
	m := x.n.fsm.Map()
	if !x.serves(m) {
		return false
	}
	ready, total := ReadyExperts(m)
	return ready == total
}

// WaitReady blocks until Ready is true or ctx is done (then it returns
// ctx's error).
func (x *Experts) WaitReady(ctx context.Context) error {
	for {
		ch := x.n.fsm.Changed()
		if x.Ready() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Serving reports why this node cannot serve now: the map's live model is
// not the one x's weights hold, so its dense weights would meet the live
// model's experts (api.Config.Serving). nil while the map has no model
// yet, or it is this one.
func (x *Experts) Serving() error {
	m := x.n.fsm.Map()
	if m.Model == nil || x.serves(m) {
		return nil
	}
	return fmt.Errorf("this node runs another model (digest %s) than the cluster's live %s (digest %s); restart it without --model to fetch the live one, or with that file, or make this node's model live with conclave model load",
		short(x.digest), m.Model.ID, short(m.Model.Digest))
}

// checkModel validates a model posted to POST /admin/v1/model.
func checkModel(mod router.Model) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: model: %s", errBadRequest, fmt.Sprintf(format, args...))
	}
	switch {
	case mod.ID == "":
		return bad("id required")
	case len(mod.Digest) != 64:
		return bad("digest must be 64 hex digits (the root of the file's chunk manifest, cluster.InspectModel), got %q", mod.Digest)
	case mod.Layers <= 0:
		return bad("layers %d must be > 0", mod.Layers)
	case mod.Experts < 0 || mod.TopK < 0 || mod.ExpertBytes < 0 || mod.Version < 0:
		return bad("negative dimension")
	case mod.TopK > mod.Experts:
		return bad("top_k %d > experts %d", mod.TopK, mod.Experts)
	}
	if _, err := hex.DecodeString(mod.Digest); err != nil {
		return bad("digest %q is not hex", mod.Digest)
	}
	return nil
}

// handleModel loads a model into the cluster: body = router.Model (as
// InspectModel describes the file). It is rejected unless some node's model
// file has the digest; otherwise it becomes the live model (OpSetModel,
// Live) and the leader places its experts. It does not wait for them to be
// ready (poll the map: ReadyExperts).
func (n *Node) handleModel(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	if len(b) > maxBody {
		writeError(w, fmt.Errorf("%w: body over %d bytes", errBadRequest, maxBody))
		return
	}
	var mod router.Model
	if err := json.Unmarshal(b, &mod); err != nil {
		writeError(w, fmt.Errorf("%w: model: %v", errBadRequest, err))
		return
	}
	if mod.Version == 0 {
		mod.Version = 1
	}
	if err := checkModel(mod); err != nil {
		writeError(w, err)
		return
	}
	mod.Live = true
	hosts := ModelHosts(n.fsm.Map(), mod.Digest)
	if len(hosts) == 0 {
		writeError(w, fmt.Errorf("%w with digest %s (start a node with --model on that file)", ErrNoHost, mod.Digest))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 4*n.cfg.ApplyTimeout)
	defer cancel()
	if err := n.Apply(ctx, router.Command{Op: router.OpSetModel, Model: &mod}); err != nil {
		writeError(w, err)
		return
	}
	m := n.waitApplied(ctx, func(m *router.Map) bool {
		return m.Model != nil && m.Model.Digest == mod.Digest && m.Model.ID == mod.ID
	})
	writeJSON(w, http.StatusOK, ModelReply{Model: mod, Epoch: m.Epoch, Hosts: hosts})
}

// LoadModel makes mod the cluster's live model (POST /admin/v1/model); it
// does not wait for its experts to be ready.
func (c *AdminClient) LoadModel(ctx context.Context, mod router.Model) (ModelReply, error) {
	b, err := json.Marshal(mod)
	if err != nil {
		return ModelReply{}, err
	}
	var r ModelReply
	return r, c.do(ctx, http.MethodPost, "/admin/v1/model", b, nil, &r)
}
