package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// Errors. RunExperts returns them wrapped; test with errors.Is.
var (
	// ErrNoReplica: an expert has no replica that answered and this node
	// cannot compute it itself (no fallback weights).
	ErrNoReplica = fmt.Errorf("dispatch: no replica answered (%w)", model.ErrExpertUnavailable)
	// ErrRemote wraps an error an expert actor reported.
	ErrRemote = errors.New("dispatch: expert actor error")
	// errAnswered marks a call its node answered with an error of the call
	// (the version is not running there, a bad shape): the node is up, so
	// it is not suspected, and its other experts stay in use.
	errAnswered = errors.New("the replica answered")
	// ErrInvalidConfig is wrapped by Config.Validate's errors.
	ErrInvalidConfig = errors.New("dispatch: invalid config")
)

// Config tunes a Dispatcher.
type Config struct {
	// Self is this node's ID in the cluster map: its replicas are called
	// in process, without serialisation.
	Self string
	// Timeout is the deadline of one remote expert call; a call that misses
	// it is retried on the next replica.
	Timeout time.Duration
	// MaxAttempts is the most replicas tried for one expert in one layer
	// before the local fallback; 0 means every ready replica.
	MaxAttempts int
	// SuspectFor is how long a node whose call failed is tried after the
	// other replicas (and, when a fallback is available, not at all).
	SuspectFor time.Duration
}

// DefaultConfig returns a 2 s call deadline, every replica tried, and
// failed nodes avoided for 5 s.
func DefaultConfig() Config {
	return Config{Timeout: 2 * time.Second, SuspectFor: 5 * time.Second}
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.Timeout <= 0:
		return fmt.Errorf("%w: Timeout %v <= 0", ErrInvalidConfig, c.Timeout)
	case c.MaxAttempts < 0:
		return fmt.Errorf("%w: MaxAttempts %d < 0", ErrInvalidConfig, c.MaxAttempts)
	case c.SuspectFor < 0:
		return fmt.Errorf("%w: SuspectFor %v < 0", ErrInvalidConfig, c.SuspectFor)
	}
	return nil
}

// LocalExperts finds the expert versions this node runs, for calls in
// process. *expert.Host implements it.
type LocalExperts interface {
	LocalVersion(id router.ExpertID, version string) (*expert.Expert, bool)
}

// Fallback computes an expert on this node from its own model file when no
// replica answers. Weights bound from the mmapped GGUF cost nothing until an
// expert computes.
type Fallback struct {
	W    *model.Weights
	Pool *kernels.Pool
	// Versions, when set, binds versions of an expert other than the base
	// (hot updates) on demand, for a fallback on a node that does not run
	// the live version; it may block (fetching the expert file).
	Versions expert.VersionSource
	// Holds reports whether W's file holds expert (layer, e)'s bytes; nil
	// means every expert's. A node whose model file is partial (fetched from
	// peers) never computes on bytes it does not hold.
	Holds func(layer, e int) bool
}

// has reports whether the fallback can compute expert (layer, e).
func (f *Fallback) has(layer, e int) bool {
	return f != nil && f.W != nil && (f.Holds == nil || f.Holds(layer, e))
}

// Stats counts a dispatcher's work since it was made.
type Stats struct {
	Local     int64 // expert calls served in process
	Remote    int64 // expert calls answered by another node
	Retries   int64 // calls repeated on another replica after a failure or timeout
	Timeouts  int64 // calls that missed Config.Timeout
	Fallbacks int64 // experts computed from this node's own weights as a last resort
	BytesSent int64 // activation payload bytes sent to other nodes
	BytesRecv int64 // activation payload bytes received from other nodes
	Stale     int64 // responses from a node whose map epoch differed from ours
	Batches   int64 // messages that carried several groups to one node (each group still counts in Remote)
}

// Dispatcher is the cluster's model.ExpertRunner: for each layer it sends
// each expert's rows to a replica the router map names (the groups bound
// for the same other node together, in one message, computed there as one
// batch) and fills the groups' outputs from the answers. Results do not depend on
// which replica computes (kernels are batch-invariant and rows
// independent), so retries and fallback never change the output.
//
// RunExperts calls are serialised; the engine makes one at a time anyway.
type Dispatcher struct {
	cfg      Config
	sys      *actor.ActorSystem
	maps     func() *router.Map
	local    LocalExperts
	fallback *Fallback

	mu      sync.Mutex // serialises RunExperts; guards the fields below
	scratch model.ExpertScratch
	lbatch  expert.Batch   // this node's own groups of a layer, computed together
	perNode map[string]int // pending groups per other node, for batching
	// This layer's batch messages and calls by node (the maps are reused;
	// the messages are new each layer, since they are sent asynchronously).
	batchReqs  map[string]*expert.ComputeBatchRequest
	batchCalls map[string]*batchCall
	localEs    []*expert.Expert
	localGs    []*model.ExpertGroup
	assigned   map[string]int
	pending    []pending
	suspect    map[string]time.Time
	// calls numbers this dispatcher's calls, from a random start: an
	// answer must name its call (a late answer to a call of an earlier
	// incarnation of this node, on the same address, would otherwise fill
	// a newer call with another request's outputs).
	calls uint64

	local_, remote, retries, timeouts, fallbacks, sent, recv, stale, batches atomic.Int64
	routed                                                                   atomic.Pointer[rowTable] // rows per expert (gating counts)
	lat                                                                      latencyHist              // RunExperts durations
	nodeBusy                                                                 nodeHists                // per node called: its actors' compute time per call
}

type pending struct {
	g     int    // group index
	ver   string // the expert version the map says serves
	tried []router.Replica
	cands []router.Replica
	fut   *actor.Future
	batch *batchCall // the call carries this group as part `part` of a batch
	part  int
	addr  string // actor address of tried's last node, before the call goes out
	epoch uint64
	call  uint64 // the id of the call in flight (not a batch's)
	done  bool   // output filled
	// lastErr is the last replica's failure, for the error when no
	// replica and no fallback is left.
	lastErr error
}

// batchCall is one ComputeBatchRequest: every group of a layer that goes
// to the same other node, in one message; the answer is read once.
type batchCall struct {
	node  string
	parts int
	call  uint64
	fut   *actor.Future
	read  bool
	resp  *expert.ComputeBatchResponse
	err   error
}

// New returns a dispatcher that reads the current map with maps (called once
// per layer), reaches other nodes' expert actors through sys, runs this
// node's own replicas through local (nil: none) and, as a last resort,
// computes from fb (nil: no fallback).
func New(cfg Config, sys *actor.ActorSystem, maps func() *router.Map, local LocalExperts, fb *Fallback) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Dispatcher{cfg: cfg, sys: sys, maps: maps, local: local, fallback: fb,
		assigned: map[string]int{}, suspect: map[string]time.Time{}, perNode: map[string]int{},
		batchReqs: map[string]*expert.ComputeBatchRequest{}, batchCalls: map[string]*batchCall{},
		calls: rand.Uint64()}, nil
}

// nextCall returns a new call id (never 0, which answers from builds
// before call ids carry).
func (d *Dispatcher) nextCall() uint64 {
	d.calls++
	if d.calls == 0 {
		d.calls++
	}
	return d.calls
}

// Stats returns the counters.
func (d *Dispatcher) Stats() Stats {
	return Stats{Local: d.local_.Load(), Remote: d.remote.Load(), Retries: d.retries.Load(),
		Timeouts: d.timeouts.Load(), Fallbacks: d.fallbacks.Load(), BytesSent: d.sent.Load(),
		BytesRecv: d.recv.Load(), Stale: d.stale.Load(), Batches: d.batches.Load()}
}

var _ model.ExpertRunner = (*Dispatcher)(nil)

// RunExperts implements model.ExpertRunner. Remote calls for all of the
// layer's groups go out first, then this node's own groups compute in
// process while they are in flight, then answers are gathered; a failed or
// timed-out call is retried on the next candidate replica and, when none is
// left, computed from the fallback weights. It gives up with ctx only
// between calls (each call is bounded by Config.Timeout).
func (d *Dispatcher) RunExperts(ctx context.Context, layer int, groups []model.ExpertGroup) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	defer func() { d.lat.observe(time.Since(start)) }()
	m := d.maps()
	clear(d.assigned)
	d.pending = d.pending[:0]
	now := time.Now()
	isSuspect := func(node string) bool {
		t, ok := d.suspect[node]
		return ok && now.Before(t)
	}
	// The local experts found now are the ones computed below: a second
	// lookup could miss one a map change stopped meanwhile (the host syncs
	// its actors on another goroutine), and a nil expert would crash the
	// batch.
	d.localEs, d.localGs = d.localEs[:0], d.localGs[:0]
	for gi := range groups {
		g := &groups[gi]
		id := router.ExpertID{Layer: layer, Index: g.Expert}
		if layer >= 0 && g.Expert >= 0 {
			d.count(layer, g.Expert, len(g.Rows))
		}
		ver := m.LiveVersion(id)
		cands := Candidates(m, id, d.cfg.Self, d.assigned, isSuspect)
		if d.canFallBack(id, ver) {
			cands = dropSuspects(cands, d.cfg.Self, isSuspect)
		}
		if len(cands) > 0 && cands[0].Node == d.cfg.Self {
			if e, ok := d.localExpert(id, ver); ok {
				d.localEs = append(d.localEs, e)
				d.localGs = append(d.localGs, g)
				d.local_.Add(1)
				continue
			}
			cands = cands[1:] // map says ready but the actor is not up (yet)
		}
		// Cut after this node's own replica is skipped, so a skipped one
		// does not spend an attempt.
		if d.cfg.MaxAttempts > 0 && len(cands) > d.cfg.MaxAttempts {
			cands = cands[:d.cfg.MaxAttempts]
		}
		p := pending{g: gi, ver: ver, cands: cands, epoch: m.Epoch}
		d.claim(m, &p)
		d.pending = append(d.pending, p)
	}
	d.sendClaimed(m, layer, groups)
	d.lbatch.Forward(d.localEs, d.localGs)
	clear(d.localEs)
	clear(d.localGs)
	// Gather in rounds: wait for every outstanding call, then resend all the
	// failed ones at once, so k failures cost about one extra deadline, not k.
	var retry []int
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		retry = retry[:0]
		for i := range d.pending {
			p := &d.pending[i]
			if p.done {
				continue
			}
			if p.fut == nil && p.batch == nil { // no replica left
				if err := d.computeFallback(layer, p.ver, &groups[p.g]); err != nil {
					if p.lastErr != nil {
						return fmt.Errorf("%w; the last replica tried (%s) failed: %w", err, p.tried[len(p.tried)-1].Node, p.lastErr)
					}
					return err
				}
				p.done = true
				continue
			}
			var err error
			if p.batch != nil {
				err = d.receivePart(p, &groups[p.g])
			} else {
				err = d.receive(p, &groups[p.g])
			}
			if err == nil {
				p.done = true
				continue
			}
			p.lastErr = err
			if !errors.Is(err, errAnswered) {
				node := p.tried[len(p.tried)-1].Node
				d.suspect[node] = time.Now().Add(d.cfg.SuspectFor)
			}
			retry = append(retry, i)
		}
		if len(retry) == 0 {
			return nil
		}
		for _, i := range retry {
			p := &d.pending[i]
			if len(p.cands) > 0 {
				d.retries.Add(1)
			}
			d.send(m, layer, &groups[p.g], p)
		}
	}
}

// Local returns an ExpertRunner that computes only the groups whose live
// version this node runs, in process as RunExperts computes them (the same
// fused batch and scratch), and leaves the other groups' outputs alone. It
// counts nothing in Stats. Engine.Warm uses it, so that a node warming up
// does not load its peers.
func (d *Dispatcher) Local() model.ExpertRunner { return localRunner{d} }

type localRunner struct{ d *Dispatcher }

func (l localRunner) RunExperts(ctx context.Context, layer int, groups []model.ExpertGroup) error {
	d := l.d
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.maps()
	d.localEs, d.localGs = d.localEs[:0], d.localGs[:0]
	for gi := range groups {
		g := &groups[gi]
		id := router.ExpertID{Layer: layer, Index: g.Expert}
		if e, ok := d.localExpert(id, m.LiveVersion(id)); ok {
			d.localEs = append(d.localEs, e)
			d.localGs = append(d.localGs, g)
		}
	}
	d.lbatch.Forward(d.localEs, d.localGs)
	clear(d.localEs)
	clear(d.localGs)
	return ctx.Err()
}

func dropSuspects(cands []router.Replica, self string, suspect func(string) bool) []router.Replica {
	out := cands[:0:0]
	for _, r := range cands {
		if r.Node == self || !suspect(r.Node) {
			out = append(out, r)
		}
	}
	return out
}

// canFallBack reports whether this node can compute version of expert id
// itself at once, so suspect replicas are not worth a deadline: the base
// version from the fallback's weights, another version only if it runs here
// (binding it through Fallback.Versions may fetch a file, minutes, while a
// suspect replica that is up would answer in milliseconds).
func (d *Dispatcher) canFallBack(id router.ExpertID, version string) bool {
	if version == router.BaseVersion {
		return d.fallback.has(id.Layer, id.Index)
	}
	_, ok := d.localExpert(id, version)
	return ok
}

func (d *Dispatcher) localExpert(id router.ExpertID, version string) (*expert.Expert, bool) {
	if d.local == nil {
		return nil, false
	}
	return d.local.LocalVersion(id, version)
}

// send issues the call to p's next candidate, or leaves p.fut nil when none
// is left. A candidate on this node whose actor is down is skipped.
func (d *Dispatcher) send(m *router.Map, layer int, g *model.ExpertGroup, p *pending) {
	if d.claim(m, p) {
		d.request(layer, g, p)
	}
}

// claim takes p's next reachable candidate (appended to p.tried, its actor
// address in p.addr) and counts it as assigned; false when none is left.
func (d *Dispatcher) claim(m *router.Map, p *pending) bool {
	p.fut, p.batch, p.addr = nil, nil, ""
	for len(p.cands) > 0 {
		r := p.cands[0]
		p.cands = p.cands[1:]
		p.tried = append(p.tried, r)
		n, ok := m.Nodes[r.Node]
		if !ok || n.ActorAddr == "" {
			continue
		}
		d.assigned[r.Node]++
		p.addr = n.ActorAddr
		if r.Node == d.cfg.Self {
			p.addr = d.sys.Address()
		}
		return true
	}
	return false
}

// sendClaimed issues the calls of the pending groups claimed by RunExperts:
// the groups bound for another node of this build go there as one batch
// when there are two or more of them (one message, computed there as one
// expert.Batch); the rest one call per group.
func (d *Dispatcher) sendClaimed(m *router.Map, layer int, groups []model.ExpertGroup) {
	self := m.Nodes[d.cfg.Self].Version
	clear(d.perNode)
	for i := range d.pending {
		p := &d.pending[i]
		if p.addr == "" {
			continue
		}
		node := p.tried[len(p.tried)-1].Node
		if node != d.cfg.Self && m.Nodes[node].Version == self {
			d.perNode[node]++
		}
	}
	clear(d.batchReqs)
	clear(d.batchCalls)
	req, calls := d.batchReqs, d.batchCalls
	for i := range d.pending {
		p := &d.pending[i]
		if p.addr == "" {
			continue
		}
		node := p.tried[len(p.tried)-1].Node
		if d.perNode[node] < 2 {
			d.request(layer, &groups[p.g], p)
			continue
		}
		r, ok := req[node]
		if !ok {
			g := &groups[p.g]
			r = &expert.ComputeBatchRequest{Epoch: p.epoch, Layer: int32(layer), Dim: int32(len(g.In) / max(len(g.Rows), 1))}
			req[node], calls[node] = r, &batchCall{node: node}
		}
		g := &groups[p.g]
		r.Parts = append(r.Parts, &expert.BatchPart{Expert: int32(g.Expert), Version: p.ver, Rows: int32(len(g.Rows)),
			// A fresh buffer per call: the remote writes it asynchronously.
			Activations: expert.AppendFloats(make([]byte, 0, 4*len(g.In)), g.In)})
		p.batch, p.part = calls[node], len(r.Parts)-1
	}
	for node, r := range req {
		c := calls[node]
		c.parts = len(r.Parts)
		c.call = d.nextCall()
		r.Call = c.call
		c.fut = d.sys.Root.RequestFuture(expert.BatchPID(m.Nodes[node].ActorAddr), r, d.cfg.Timeout)
		d.batches.Add(1)
		for _, part := range r.Parts {
			d.sent.Add(int64(len(part.Activations)))
		}
	}
}

// request issues p's call to the candidate claim took.
func (d *Dispatcher) request(layer int, g *model.ExpertGroup, p *pending) {
	rows := len(g.Rows)
	req := &expert.ComputeRequest{
		Epoch: p.epoch, Layer: int32(layer), Expert: int32(g.Expert), Rows: int32(rows), Dim: int32(len(g.In) / max(rows, 1)),
		// A fresh buffer per call: the remote writes it asynchronously.
		Activations: expert.AppendFloats(make([]byte, 0, 4*len(g.In)), g.In),
	}
	p.call = d.nextCall()
	req.Call = p.call
	p.fut = d.sys.Root.RequestFuture(expert.VersionPID(p.addr, router.ExpertID{Layer: layer, Index: g.Expert}, p.ver), req, d.cfg.Timeout)
	if p.tried[len(p.tried)-1].Node != d.cfg.Self {
		d.sent.Add(int64(len(req.Activations)))
	}
}

// receivePart reads p's part of its batch call (waiting for the answer the
// first time) into g.Out.
func (d *Dispatcher) receivePart(p *pending, g *model.ExpertGroup) error {
	b := p.batch
	if !b.read {
		b.read = true
		res, err := b.fut.Result()
		switch {
		case err != nil:
			if errors.Is(err, actor.ErrTimeout) {
				d.timeouts.Add(1)
			}
			b.err = err
		default:
			resp, ok := res.(*expert.ComputeBatchResponse)
			if !ok || len(resp.Parts) != b.parts {
				b.err = fmt.Errorf("%w: unexpected answer %T to a batch of %d", ErrRemote, res, b.parts)
				break
			}
			if resp.Call != 0 && resp.Call != b.call {
				b.err = fmt.Errorf("%w: an answer to another call (%x, not %x)", ErrRemote, resp.Call, b.call)
				break
			}
			b.resp = resp
			d.nodeBusy.observe(b.node, time.Duration(resp.BusyNs))
			for _, r := range resp.Parts {
				d.recv.Add(int64(len(r.Activations)))
			}
		}
	}
	if b.err != nil {
		return b.err
	}
	r := b.resp.Parts[p.part]
	if r.Error != "" {
		return fmt.Errorf("%w: %w: %s", ErrRemote, errAnswered, r.Error)
	}
	if err := expert.DecodeFloats(g.Out, r.Activations, int(r.Rows), int(r.Dim)); err != nil {
		return err
	}
	if b.resp.Epoch != 0 && b.resp.Epoch != p.epoch {
		d.stale.Add(1)
	}
	d.remote.Add(1)
	return nil
}

// receive waits for p's answer and decodes it into g.Out.
func (d *Dispatcher) receive(p *pending, g *model.ExpertGroup) error {
	res, err := p.fut.Result()
	if err != nil {
		if errors.Is(err, actor.ErrTimeout) {
			d.timeouts.Add(1)
		}
		return err
	}
	resp, ok := res.(*expert.ComputeResponse)
	if !ok {
		return fmt.Errorf("%w: unexpected answer %T", ErrRemote, res)
	}
	if resp.Call != 0 && resp.Call != p.call {
		return fmt.Errorf("%w: an answer to another call (%x, not %x)", ErrRemote, resp.Call, p.call)
	}
	if resp.Error != "" {
		return fmt.Errorf("%w: %w: %s", ErrRemote, errAnswered, resp.Error)
	}
	d.nodeBusy.observe(p.tried[len(p.tried)-1].Node, time.Duration(resp.BusyNs))
	if err := expert.DecodeFloats(g.Out, resp.Activations, int(resp.Rows), int(resp.Dim)); err != nil {
		return err
	}
	if resp.Epoch != 0 && resp.Epoch != p.epoch {
		d.stale.Add(1)
	}
	if p.tried[len(p.tried)-1].Node == d.cfg.Self {
		d.local_.Add(1)
	} else {
		d.remote.Add(1)
		d.recv.Add(int64(len(resp.Activations)))
	}
	return nil
}

// computeFallback computes g from this node's own weights: its own actor's
// expert when it runs the version (a call in process), else, for the base
// version only, the fallback model.
func (d *Dispatcher) computeFallback(layer int, version string, g *model.ExpertGroup) error {
	if e, ok := d.localExpert(router.ExpertID{Layer: layer, Index: g.Expert}, version); ok {
		e.Forward(g.In, len(g.Rows), g.Out)
		d.fallbacks.Add(1)
		return nil
	}
	if version != router.BaseVersion {
		if d.fallback == nil || d.fallback.Versions == nil {
			return fmt.Errorf("%w: layer %d expert %d version %.12s (not loaded here)", ErrNoReplica, layer, g.Expert, version)
		}
		ffn, err := d.fallback.Versions(router.ExpertID{Layer: layer, Index: g.Expert}, version)
		if err != nil {
			return fmt.Errorf("%w: layer %d expert %d version %.12s: %w", ErrNoReplica, layer, g.Expert, version, err)
		}
		ffn.Forward(d.fallback.Pool, &d.scratch, g.In, len(g.Rows), g.Out)
		d.fallbacks.Add(1)
		return nil
	}
	if !d.fallback.has(layer, g.Expert) {
		return fmt.Errorf("%w: layer %d expert %d (not held on this node)", ErrNoReplica, layer, g.Expert)
	}
	w := d.fallback.W
	if layer >= len(w.Blocks) || g.Expert >= len(w.Blocks[layer].Experts) {
		return fmt.Errorf("%w: layer %d expert %d is not in the fallback model", ErrNoReplica, layer, g.Expert)
	}
	w.Blocks[layer].Experts[g.Expert].Forward(d.fallback.Pool, &d.scratch, g.In, len(g.Rows), g.Out)
	d.fallbacks.Add(1)
	return nil
}
