package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
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

	rates atomic.Pointer[[]router.ExpertLoad] // latest local rates, for the collector

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
	x := &Experts{n: n, w: w, host: host, stop: make(chan struct{}), done: make(chan struct{})}
	disp, err := dispatch.New(dc, n.actors, n.fsm.Map, host, &dispatch.Fallback{W: w, Pool: pool, Versions: x.expertVersion})
	if err != nil {
		return nil, err
	}
	x.disp = disp
	host.SetVersionSource(x.expertVersion)
	n.xp.Store(x)
	if n.cfg.FaultInjection {
		x.registerFaults(host.EnableFaults())
	}
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

// WeightsVersion names the live expert versions of the current map: it
// changes whenever a hot update or rollback flips an expert (give it to
// the engine with engine.WithWeightsVersion, so that the prefix cache never
// serves keys and values of replaced weights). It costs a map read when no
// expert was ever updated.
func (x *Experts) WeightsVersion() uint64 {
	m := x.n.fsm.Map()
	if len(m.ExpertVersions) == 0 {
		return 0
	}
	h := fnv.New64a()
	for _, v := range m.ExpertVersionList() {
		fmt.Fprintf(h, "%d/%d=%s;", v.Expert.Layer, v.Expert.Index, v.State.Live)
	}
	return h.Sum64()
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
	if x.n.xp.CompareAndSwap(x, nil) {
		x.n.files.close() // no actor computes from an expert file now
	}
}

func (x *Experts) loop() {
	defer close(x.done)
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
		case <-x.stop:
			return
		case <-x.n.stopCh:
			return
		}
	}
}

// sync makes the running actors match the map (for every replica placed
// here: the live version, a staged one, and the previous one kept for a
// rollback) and reports the live and staged versions loaded. It returns true
// when something failed and should be retried.
func (x *Experts) sync(m *router.Map) (retry bool) {
	self := x.n.cfg.ID
	want := map[router.ExpertID][]string{}
	if x.serves(m) {
		for _, id := range m.ExpertsOn(self) {
			want[id] = m.WantedVersions(id)
		}
	}
	if err := x.host.SyncVersions(want); err != nil {
		x.n.log.Warn("start expert actors", "error", err)
		retry = true
	}
	for _, id := range m.ExpertsOn(self) {
		if _, ok := want[id]; !ok {
			continue
		}
		v := m.ExpertVersions[id]
		r := replicaOn(m, id, self)
		reports := []struct {
			version string
			done    bool
		}{{v.Live, r.Ready}}
		if v.Staging {
			reports = append(reports, struct {
				version string
				done    bool
			}{v.Staged, r.Staged})
		}
		for _, rep := range reports {
			if _, running := x.host.LocalVersion(id, rep.version); !running || rep.done {
				continue
			}
			ctx, cancel := context.WithTimeout(x.n.ctx, x.n.cfg.ApplyTimeout)
			err := x.n.Apply(ctx, router.Command{Op: router.OpSetReplicaReady, Expert: &id, NodeID: self, Ready: true, Version: rep.version})
			cancel()
			switch {
			case errors.Is(err, router.ErrUnknownReplica), errors.Is(err, router.ErrStaleVersion):
				// Placement or the version moved meanwhile; the next map change syncs again.
			case err != nil:
				x.n.log.Debug("report expert ready", "expert", id, "version", rep.version, "error", err)
				return true
			}
		}
	}
	return retry
}

// serves reports whether the map's live model is the one x's weights hold.
func (x *Experts) serves(m *router.Map) bool {
	mod := m.Model
	if mod == nil || mod.Layers != x.w.Layers || mod.Experts != x.w.Experts {
		return false
	}
	return x.n.model == nil || x.n.model.Digest == mod.Digest
}

// replicaOn returns id's replica on node (the zero Replica if none).
func replicaOn(m *router.Map, id router.ExpertID, node string) router.Replica {
	for _, r := range m.Placement[id] {
		if r.Node == node {
			return r
		}
	}
	return router.Replica{}
}
