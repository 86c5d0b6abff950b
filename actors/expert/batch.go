package expert

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// BatchName is the actor name of every node's batch actor: it serves
// ComputeBatchRequests for the experts its Host runs.
const BatchName = "expert-batch"

// BatchPID is the batch actor of the node whose actor address is addr.
func BatchPID(addr string) *actor.PID { return actor.NewPID(addr, BatchName) }

// batchActor computes every part of a ComputeBatchRequest that its host
// runs as one Batch (two pool joins for all of them), so a caller that
// routes several groups of a layer to this node sends one message and this
// node computes them together. Parts are answered in order; a part whose
// expert or version this host does not run, or whose payload is malformed,
// gets an error of its own while the others compute.
type batchActor struct {
	h      *Host
	batch  Batch
	es     []*Expert
	groups []*model.ExpertGroup
	parts  []int // parts[i]: the request part es[i] computes
	bufs   []model.ExpertGroup
}

func (a *batchActor) Receive(c actor.Context) {
	req, ok := c.Message().(*ComputeBatchRequest)
	if !ok {
		return
	}
	c.Respond(a.compute(req))
}

func (a *batchActor) compute(req *ComputeBatchRequest) *ComputeBatchResponse {
	resp := &ComputeBatchResponse{Parts: make([]*ComputeResponse, len(req.Parts)), Call: req.Call}
	if a.h.epoch != nil {
		resp.Epoch = a.h.epoch()
	}
	dim := int(req.Dim)
	if len(a.bufs) < len(req.Parts) {
		a.bufs = append(a.bufs, make([]model.ExpertGroup, len(req.Parts)-len(a.bufs))...)
	}
	a.es, a.groups, a.parts = a.es[:0], a.groups[:0], a.parts[:0]
	var delay time.Duration
	for i, p := range req.Parts {
		r := &ComputeResponse{Epoch: resp.Epoch, Rows: p.Rows, Dim: req.Dim}
		resp.Parts[i] = r
		id := router.ExpertID{Layer: int(req.Layer), Index: int(p.Expert)}
		e, ok := a.h.LocalVersion(id, p.Version)
		if !ok {
			r.Error = fmt.Sprintf("%v: %v version %.12q is not running here", ErrNotHosted, id, p.Version)
			continue
		}
		rows := int(p.Rows)
		if dim != e.dim {
			r.Error = fmt.Sprintf("%v: dim %d, expert has %d", ErrBadPayload, dim, e.dim)
			continue
		}
		if err := CheckShape(len(p.Activations), rows, dim); err != nil {
			r.Error = err.Error()
			continue
		}
		if i > 0 && len(a.es) > 0 && p.Expert <= req.Parts[a.parts[len(a.parts)-1]].Expert {
			r.Error = fmt.Sprintf("%v: parts not in ascending expert order", ErrBadPayload)
			continue
		}
		g := &a.bufs[i]
		g.Expert = int(p.Expert)
		g.Rows = growRows(g.Rows, rows)
		g.In = growFloats(g.In, rows*dim)
		g.Out = growFloats(g.Out, rows*dim)
		if err := DecodeFloats(g.In, p.Activations, rows, dim); err != nil {
			r.Error = err.Error()
			continue
		}
		delay = max(delay, a.h.faults.delayOf(id))
		a.es, a.groups, a.parts = append(a.es, e), append(a.groups, g), append(a.parts, i)
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	start := time.Now()
	a.batch.Forward(a.es, a.groups)
	resp.BusyNs = int64(time.Since(start))
	for k, i := range a.parts {
		g := a.groups[k]
		resp.Parts[i].Activations = AppendFloats(make([]byte, 0, 4*len(g.Out)), g.Out)
	}
	clear(a.es)
	clear(a.groups)
	return resp
}

// growRows returns b resized to n (its values are not used: only the count).
func growRows(b []int32, n int) []int32 {
	if cap(b) < n {
		return make([]int32, n)
	}
	return b[:n]
}
