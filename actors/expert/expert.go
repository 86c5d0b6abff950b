package expert

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// ErrNotHosted is wrapped by errors about an expert the model or this host
// does not have.
var ErrNotHosted = errors.New("expert: expert not hosted")

// ErrVersionCollision means a version's actor name (VersionName) is that of
// another running version of the same expert.
var ErrVersionCollision = errors.New("expert: version name collision")

// Expert is one expert of one layer bound to its weights (matrices that
// point into the mmapped GGUF: binding copies nothing, and pages are read
// only when the expert computes). Forward may be called from any goroutine,
// concurrently too: each call computes in a scratch taken from the
// process's shared list (scratches).
type Expert struct {
	id      router.ExpertID
	version string // router.BaseVersion: the model file's own weights
	w       *model.Expert
	dim     int
	pool    *kernels.Pool

	calls, rows, busyNS atomic.Int64
}

// scratchList is the intermediate activations every Expert of the process
// computes in: a call takes one (a Batch one per group) and puts it back
// when done, so a scratch serves whichever experts compute next instead of
// each expert growing its own. An expert's scratch for a prefill's ~100
// rows is a few MB; with one each, a node hosting 64 experts touched a
// fresh ~300 MB in its first prefill wave (a page fault per 4 KiB: 0.8 s of
// system time in a 16-prompt wave of the bench preset) and kept growing
// them in later waves as row counts moved. Shared, the same few scratches
// are reused by every layer and stay warm. Most recently returned first.
//
// A scratch keeps the size of the largest call it served. The list keeps
// at most maxFreeScratches (more exist only while that many calls run at
// once) and is emptied whenever a Host stops an expert, so memory grown
// for experts a node no longer hosts goes back as it did when each expert
// owned its scratch.
type scratchList struct {
	mu   sync.Mutex
	free []*model.ExpertScratch
}

// maxFreeScratches is the most scratches the list keeps: a layer's groups
// in one Batch (the experts of a layer) and a few concurrent calls.
const maxFreeScratches = 32

// scratches is the process's scratchList.
var scratches scratchList

// take appends n scratches to dst: those most recently put back, else new.
func (l *scratchList) take(dst []*model.ExpertScratch, n int) []*model.ExpertScratch {
	l.mu.Lock()
	k := min(n, len(l.free))
	// Back to front, so that a Batch whose scratches were put back in order
	// gets each position's scratch again.
	for i := range k {
		dst = append(dst, l.free[len(l.free)-1-i])
		l.free[len(l.free)-1-i] = nil
	}
	l.free = l.free[:len(l.free)-k]
	l.mu.Unlock()
	for range n - k {
		dst = append(dst, new(model.ExpertScratch))
	}
	return dst
}

// put returns ss, in reverse so that take hands them out in the same order;
// those past maxFreeScratches are dropped.
func (l *scratchList) put(ss []*model.ExpertScratch) {
	l.mu.Lock()
	for i := len(ss) - 1; i >= 0 && len(l.free) < maxFreeScratches; i-- {
		l.free = append(l.free, ss[i])
	}
	l.mu.Unlock()
}

// reset drops every scratch in the list.
func (l *scratchList) reset() {
	l.mu.Lock()
	clear(l.free)
	l.free = l.free[:0]
	l.mu.Unlock()
}

// Load is an expert's work so far.
type Load struct {
	Calls int64         // Forward calls (local or by message)
	Rows  int64         // rows computed
	Busy  time.Duration // time spent computing: the sum of the calls' durations (calls that overlap each count whole)
}

// New binds expert id of w. pool runs its matrix products (it may be shared
// with other experts; concurrent users of a kernels.Pool share its workers).
func New(w *model.Weights, id router.ExpertID, pool *kernels.Pool) (*Expert, error) {
	if id.Layer < 0 || id.Layer >= len(w.Blocks) || id.Index < 0 || id.Index >= len(w.Blocks[id.Layer].Experts) {
		return nil, fmt.Errorf("%w: %v in a model of %d layers × %d experts", ErrNotHosted, id, len(w.Blocks), w.Experts)
	}
	return &Expert{id: id, w: &w.Blocks[id.Layer].Experts[id.Index], dim: w.Dim, pool: pool}, nil
}

// NewVersion binds version (an expert file's digest) of expert id to ffn,
// whose rows are dim floats.
func NewVersion(id router.ExpertID, version string, ffn *model.Expert, dim int, pool *kernels.Pool) *Expert {
	return &Expert{id: id, version: version, w: ffn, dim: dim, pool: pool}
}

// ID is the expert's (layer, index).
func (e *Expert) ID() router.ExpertID { return e.id }

// Version is the version the expert computes (router.BaseVersion for the
// model file's own weights).
func (e *Expert) Version() string { return e.version }

// Dim is the number of floats in one input or output row.
func (e *Expert) Dim() int { return e.dim }

// Bytes is the size of the expert's weights.
func (e *Expert) Bytes() int64 { return e.w.Bytes() }

// Forward computes rows rows of in (rows × Dim) into out (rows × Dim). Each
// output row depends only on its input row, so the result is the same
// whichever node computes it and whatever else is in the batch.
func (e *Expert) Forward(in []float32, rows int, out []float32) {
	var one [1]*model.ExpertScratch
	s := scratches.take(one[:0], 1)
	start := time.Now()
	e.w.Forward(e.pool, s[0], in[:rows*e.dim], rows, out[:rows*e.dim])
	e.busyNS.Add(int64(time.Since(start)))
	scratches.put(s)
	e.calls.Add(1)
	e.rows.Add(int64(rows))
}

// Load returns the expert's counters.
func (e *Expert) Load() Load {
	return Load{Calls: e.calls.Load(), Rows: e.rows.Load(), Busy: time.Duration(e.busyNS.Load())}
}

// Name is the actor name of expert id's base version on every node, so a
// caller can build its PID from the hosting node's actor address alone.
func Name(id router.ExpertID) string { return fmt.Sprintf("expert-l%d-e%d", id.Layer, id.Index) }

// VersionName is the actor name of a version of expert id: Name(id) for
// router.BaseVersion, else Name(id) with the version's first 16 hex digits.
// A caller that names the live version in the actor name can never reach an
// actor computing another version.
func VersionName(id router.ExpertID, version string) string {
	if version == router.BaseVersion {
		return Name(id)
	}
	return fmt.Sprintf("%s-v%.16s", Name(id), version)
}

// PID is expert id's base-version actor on the node whose actor (remote)
// address is addr.
func PID(addr string, id router.ExpertID) *actor.PID { return actor.NewPID(addr, Name(id)) }

// VersionPID is the actor of version of expert id on the node at addr.
func VersionPID(addr string, id router.ExpertID, version string) *actor.PID {
	return actor.NewPID(addr, VersionName(id, version))
}

// expertActor serves ComputeRequests for one Expert, one at a time in
// arrival order (the Expert itself may meanwhile compute for in-process
// callers and the batch actor).
type expertActor struct {
	e      *Expert
	epoch  func() uint64
	faults *Faults   // nil unless fault injection is enabled
	in     []float32 // decoded request rows, reused
	out    []float32 // outputs, reused (the response gets a fresh byte copy)
}

func (a *expertActor) Receive(c actor.Context) {
	req, ok := c.Message().(*ComputeRequest)
	if !ok {
		return
	}
	c.Respond(a.compute(req))
}

func (a *expertActor) compute(req *ComputeRequest) *ComputeResponse {
	resp := &ComputeResponse{Rows: req.Rows, Dim: req.Dim, Call: req.Call}
	if a.epoch != nil {
		resp.Epoch = a.epoch()
	}
	id := router.ExpertID{Layer: int(req.Layer), Index: int(req.Expert)}
	if id != a.e.id {
		resp.Error = fmt.Sprintf("%v: actor hosts %v, asked for %v", ErrNotHosted, a.e.id, id)
		return resp
	}
	rows, dim := int(req.Rows), int(req.Dim)
	if dim != a.e.dim {
		resp.Error = fmt.Sprintf("%v: dim %d, expert has %d", ErrBadPayload, dim, a.e.dim)
		return resp
	}
	if err := CheckShape(len(req.Activations), rows, dim); err != nil {
		resp.Error = err.Error()
		return resp
	}
	a.in = growFloats(a.in, rows*dim)
	a.out = growFloats(a.out, rows*dim)
	if err := DecodeFloats(a.in, req.Activations, rows, dim); err != nil {
		resp.Error = err.Error()
		return resp
	}
	a.faults.before(a.e.id)
	start := time.Now()
	a.e.Forward(a.in, rows, a.out)
	resp.BusyNs = int64(time.Since(start))
	resp.Activations = AppendFloats(make([]byte, 0, 4*rows*dim), a.out)
	return resp
}

// Batch computes several experts' groups of one layer in process as one
// model.ExpertBatch: two pool joins for all of them instead of six per
// expert. The zero value is ready to use; one goroutine uses it at a time.
type Batch struct {
	batch model.ExpertBatch
	calls []model.ExpertCall
	s     []*model.ExpertScratch
}

// Forward computes groups[i] on es[i] (rows of Dim floats in, and out) on
// es[0]'s pool. Forward does not keep the slices.
func (b *Batch) Forward(es []*Expert, groups []*model.ExpertGroup) {
	if len(es) == 0 {
		return
	}
	start := time.Now()
	b.s = scratches.take(b.s[:0], len(es))
	b.calls = b.calls[:0]
	for i, e := range es {
		g := groups[i]
		rows := len(g.Rows)
		b.calls = append(b.calls, model.ExpertCall{FFN: e.w, S: b.s[i], In: g.In[:rows*e.dim], Rows: rows, Out: g.Out[:rows*e.dim]})
	}
	b.batch.Forward(es[0].pool, b.calls)
	scratches.put(b.s)
	clear(b.s)
	// Each expert is charged an equal share of the batch's time.
	share := int64(time.Since(start)) / int64(len(es))
	for i, e := range es {
		e.busyNS.Add(share)
		e.calls.Add(1)
		e.rows.Add(int64(len(groups[i].Rows)))
	}
	clear(b.calls)
}
