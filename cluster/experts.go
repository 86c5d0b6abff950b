package cluster

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// expertsRetry is how often the experts loop retries a failed start or
// readiness report when the map has not changed meanwhile.
const expertsRetry = 250 * time.Millisecond

// residentTrimInterval is how often the experts loop checks whether the
// dispatcher's fallback faulted in experts this node does not host.
const residentTrimInterval = 10 * time.Second

// Experts runs a node's expert actors and the dispatcher its engine uses.
// It follows the cluster map: it starts an actor for every replica placed on
// this node (weights bound from this node's model file), reports each one
// ready in the map (router.OpSetReplicaReady), and stops actors whose
// replicas moved away. Create it with Node.StartExperts; it stops with the
// node or Close.
type Experts struct {
	n    *Node
	w    *model.Weights
	host *expert.Host
	disp *dispatch.Dispatcher

	rates    atomic.Pointer[[]router.ExpertLoad] // latest local rates, for the collector
	resident map[router.ExpertID]bool            // experts KeepResident last kept (loop only); nil before

	stop     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup // the report loop
	stopOnce sync.Once
}

// StartExperts starts hosting experts of w, which must be the cluster
// model's weights bound from this node's own model file, computing on
// pool. dc configures the dispatcher (dc.Self is set to this node). The
// dispatcher falls back to computing an expert from w when no replica
// answers.
func (n *Node) StartExperts(w *model.Weights, pool *kernels.Pool, dc dispatch.Config) (*Experts, error) {
	dc.Self = n.cfg.ID
	host := expert.NewHost(n.actors, w, pool, func() uint64 { return n.fsm.Map().Epoch })
	disp, err := dispatch.New(dc, n.actors, n.fsm.Map, host, &dispatch.Fallback{W: w, Pool: pool})
	if err != nil {
		return nil, err
	}
	x := &Experts{n: n, w: w, host: host, disp: disp, stop: make(chan struct{}), done: make(chan struct{})}
	go x.loop()
	x.wg.Add(1)
	go x.reportLoop()
	return x, nil
}

// Runner is the model.ExpertRunner to give the node's engine
// (engine.WithExperts).
func (x *Experts) Runner() model.ExpertRunner { return x.disp }

// Dispatcher returns the dispatcher (for its Stats).
func (x *Experts) Dispatcher() *dispatch.Dispatcher { return x.disp }

// Rates returns this node's latest routed rates per expert (rows per
// second, decayed; see LoadConfig), sorted by expert; nil before the first
// report interval.
func (x *Experts) Rates() []router.ExpertLoad {
	if p := x.rates.Load(); p != nil {
		return *p
	}
	return nil
}

// Host returns the node's expert actors (for their loads).
func (x *Experts) Host() *expert.Host { return x.host }

// Close stops following the map and stops every expert actor. It does not
// mark the replicas unready: placement moves them when the node leaves.
func (x *Experts) Close() {
	x.stopOnce.Do(func() { close(x.stop) })
	<-x.done
	x.wg.Wait()
	x.host.Close()
}

func (x *Experts) loop() {
	defer close(x.done)
	trim := time.NewTicker(residentTrimInterval)
	defer trim.Stop()
	var fallbacks int64
	for {
		changed := x.n.fsm.Changed()
		retry := x.sync(x.n.fsm.Map())
		var tick <-chan time.Time
		if retry {
			tick = time.After(expertsRetry)
		}
		select {
		case <-changed:
		case <-tick:
		case <-trim.C:
			// The dispatcher's last resort computes experts this node
			// does not host from its own weights, faulting them in;
			// release them again once that has happened.
			if f := x.disp.Stats().Fallbacks; f != fallbacks {
				fallbacks, x.resident = f, nil
			}
		case <-x.stop:
			return
		case <-x.n.stopCh:
			return
		}
	}
}

// sync makes the running actors match the map and reports readiness. It
// returns true when something failed and should be retried.
func (x *Experts) sync(m *router.Map) (retry bool) {
	self := x.n.cfg.ID
	var want []router.ExpertID
	if x.serves(m) {
		want = m.ExpertsOn(self)
	}
	if err := x.host.Sync(want); err != nil {
		x.n.log.Warn("start expert actors", "error", err)
		retry = true
	}
	x.keepResident(want)
	for _, id := range want {
		if _, running := x.host.Local(id); !running || replicaReady(m, id, self) {
			continue
		}
		ctx, cancel := context.WithTimeout(x.n.ctx, x.n.cfg.ApplyTimeout)
		err := x.n.Apply(ctx, router.Command{Op: router.OpSetReplicaReady, Expert: &id, NodeID: self, Ready: true})
		cancel()
		switch {
		case errors.Is(err, router.ErrUnknownReplica):
			// Placement moved it meanwhile; the next map change syncs again.
		case err != nil:
			x.n.log.Debug("report expert ready", "expert", id, "error", err)
			return true
		}
	}
	return retry
}

// keepResident makes the node's resident memory hold the model's dense
// weights and the experts in hosted, and no other expert, when hosted
// differs from what it last applied (model.Weights.KeepResident). It runs
// before the replicas are reported ready, so a ready replica's weights are
// in memory.
func (x *Experts) keepResident(hosted []router.ExpertID) {
	set := make(map[router.ExpertID]bool, len(hosted))
	for _, id := range hosted {
		set[id] = true
	}
	if x.resident != nil && maps.Equal(set, x.resident) {
		return
	}
	start := time.Now()
	if err := x.w.KeepResident(func(l, e int) bool { return set[router.ExpertID{Layer: l, Index: e}] }); err != nil {
		x.n.log.Warn("keep hosted experts resident", "error", err)
	}
	x.resident = set
	x.n.log.Debug("resident experts", "experts", len(set), "took", time.Since(start))
}

// serves reports whether the map's live model is the one x's weights hold.
func (x *Experts) serves(m *router.Map) bool {
	mod := m.Model
	if mod == nil || mod.Layers != x.w.Layers || mod.Experts != x.w.Experts {
		return false
	}
	return x.n.model == nil || x.n.model.Digest == mod.Digest
}

func replicaReady(m *router.Map, id router.ExpertID, node string) bool {
	for _, r := range m.Placement[id] {
		if r.Node == node {
			return r.Ready
		}
	}
	return false
}
