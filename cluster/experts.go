package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
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
	n      *Node
	w      *model.Weights
	src    ExpertSource // nil: every expert's bytes are in w's file
	digest string       // the model w holds; "" when unknown
	host   *expert.Host
	disp   *dispatch.Dispatcher

	missing atomic.Pointer[[]router.ExpertID] // placed here, bytes not held yet
	fetchCh chan struct{}                     // wakes the fetch loop; buffered 1
	fetched chan struct{}                     // wakes the sync loop after a fetch; buffered 1

	rates    atomic.Pointer[[]router.ExpertLoad] // latest local rates, for the collector
	weights  atomic.Pointer[weightsVersion]      // WeightsVersion's last answer
	resident map[router.ExpertID]bool            // experts KeepResident last kept (loop only); nil before
	notLive  string                              // the live model's digest last warned to be another file (loop only)

	stop     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup // the report loop
	stopOnce sync.Once
}

// ExpertSource is where a node whose model file is partial (ModelCopy)
// gets its experts' bytes. Experts starts an expert's actor, reports it
// ready, and lets the dispatcher compute it locally only once Holds is
// true, so a node never computes on bytes it does not hold.
type ExpertSource interface {
	// Holds reports whether every byte of expert id is held and verified.
	// It does not block on the network.
	Holds(id router.ExpertID) bool
	// Fetch makes the bytes of ids held, blocking until they are, the
	// fetch fails, or ctx ends.
	Fetch(ctx context.Context, ids []router.ExpertID) error
	// ModelDigest is the digest of the model file the bytes belong to.
	ModelDigest() string
}

// StartExperts starts hosting experts of w, which must be the cluster
// model's weights bound from this node's own model file, computing on
// pool. dc configures the dispatcher (dc.Self is set to this node). The
// dispatcher falls back to computing an expert from w when no replica
// answers.
func (n *Node) StartExperts(w *model.Weights, pool *kernels.Pool, dc dispatch.Config) (*Experts, error) {
	return n.StartExpertsFrom(w, pool, dc, nil)
}

// StartExpertsFrom is StartExperts over a partial model file: w is bound
// from src's file, and an expert placed here is fetched through src before
// its actor starts; the local fallback computes only held experts. A nil
// src is StartExperts.
func (n *Node) StartExpertsFrom(w *model.Weights, pool *kernels.Pool, dc dispatch.Config, src ExpertSource) (*Experts, error) {
	dc.Self = n.cfg.ID
	host := expert.NewHost(n.actors, w, pool, func() uint64 { return n.fsm.Map().Epoch })
	fb := &dispatch.Fallback{W: w, Pool: pool}
	x := &Experts{n: n, w: w, src: src, host: host, stop: make(chan struct{}), done: make(chan struct{}),
		fetchCh: make(chan struct{}, 1), fetched: make(chan struct{}, 1)}
	if n.model != nil {
		x.digest = n.model.Digest
	}
	if src != nil {
		x.digest = src.ModelDigest()
		fb.Holds = func(layer, e int) bool { return src.Holds(router.ExpertID{Layer: layer, Index: e}) }
	}
	fb.Versions = x.expertVersion
	var err error
	if x.disp, err = dispatch.New(dc, n.actors, n.fsm.Map, host, fb); err != nil {
		return nil, err
	}
	host.SetVersionSource(x.expertVersion)
	n.xp.Store(x)
	if x.digest != "" {
		// Placement gives this node experts of its own model only.
		n.updateMeta(func(m *NodeMeta) { m.Serving = x.digest })
	}
	if n.cfg.FaultInjection {
		x.registerFaults(host.EnableFaults())
	}
	go x.loop()
	x.wg.Add(1)
	go x.reportLoop()
	if src != nil {
		x.wg.Add(1)
		go x.fetchLoop()
	}
	return x, nil
}

// fetchLoop fetches the experts sync found missing, then wakes sync.
func (x *Experts) fetchLoop() {
	defer x.wg.Done()
	ctx, cancel := context.WithCancel(x.n.ctx)
	defer cancel()
	go func() {
		select {
		case <-x.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-x.fetchCh:
		case <-ctx.Done():
			return
		}
		// One expert at a time, waking sync after each, so experts become
		// ready as their bytes arrive rather than all at the end; the list
		// is re-read each time, so experts placement moved away meanwhile
		// are not fetched.
		t0, n := time.Now(), 0
		for {
			id, ok := x.nextMissing()
			if !ok {
				break
			}
			if err := x.src.Fetch(ctx, []router.ExpertID{id}); err != nil {
				if ctx.Err() != nil {
					return
				}
				x.n.log.Warn("fetch expert", "expert", id, "error", err)
				// sync retries it after expertsRetry.
				break
			}
			n++
			select {
			case x.fetched <- struct{}{}:
			default:
			}
		}
		if n > 0 {
			x.n.log.Info("fetched experts", "experts", n, "took", time.Since(t0).Round(time.Millisecond))
		}
	}
}

// nextMissing returns the first expert placed here whose bytes are not
// held, as of the last sync.
func (x *Experts) nextMissing() (router.ExpertID, bool) {
	if p := x.missing.Load(); p != nil {
		for _, id := range *p {
			if !x.src.Holds(id) {
				return id, true
			}
		}
	}
	return router.ExpertID{}, false
}

// Runner is the model.ExpertRunner to give the node's engine
// (engine.WithExperts).
func (x *Experts) Runner() model.ExpertRunner { return x.disp }

// LocalRunner computes only the experts this node runs (dispatch.Local):
// for the engine's warm-up.
func (x *Experts) LocalRunner() model.ExpertRunner { return x.disp.Local() }

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
// serves keys and values of replaced weights). The engine calls it every
// step: it costs a map read unless the map changed since the last call.
func (x *Experts) WeightsVersion() uint64 {
	m := x.n.fsm.Map()
	if len(m.ExpertVersions) == 0 {
		return 0
	}
	if c := x.weights.Load(); c != nil && c.m == m {
		return c.v
	}
	v := weightsVersionOf(m)
	x.weights.Store(&weightsVersion{m: m, v: v})
	return v
}

// weightsVersionOf hashes m's live expert versions with how often each was
// flipped, so an update rolled back does not restore the value
// (engine.WithWeightsVersion); staging changes nothing.
func weightsVersionOf(m *router.Map) uint64 {
	h := fnv.New64a()
	for _, v := range m.ExpertVersionList() {
		fmt.Fprintf(h, "%d/%d=%s#%d;", v.Expert.Layer, v.Expert.Index, v.State.Live, v.State.Updates)
	}
	return h.Sum64()
}

// weightsVersion caches WeightsVersion for one map snapshot (snapshots are
// immutable, so the pointer identifies it).
type weightsVersion struct {
	m *router.Map
	v uint64
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
		case <-x.fetched:
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
		x.notLive = ""
	} else if mod := m.Model; mod != nil && mod.Live && mod.Digest != x.notLive {
		// Otherwise the node only waits, ready for nothing, without a word.
		x.notLive = mod.Digest
		x.n.log.Warn("this node's model file is not the cluster's live model: it hosts no experts and its API is not ready until that file is loaded cluster-wide (conclave model load), or start the node without --model to fetch the live one",
			"live_model", mod.ID, "live_digest", short(mod.Digest), "file_digest", short(x.digest))
	}
	if x.src != nil {
		// Only experts whose bytes are here run; the rest are fetched first.
		var missing []router.ExpertID
		for _, id := range m.ExpertsOn(self) {
			if _, ok := want[id]; ok && !x.src.Holds(id) {
				missing = append(missing, id)
				delete(want, id)
			}
		}
		x.missing.Store(&missing)
		if len(missing) > 0 {
			// Sync again soon: a failed fetch is retried, and fetched
			// experts start even if no wake-up reaches the loop.
			retry = true
			select {
			case x.fetchCh <- struct{}{}:
			default:
			}
		}
	}
	if err := x.host.SyncVersions(want); err != nil {
		x.n.log.Warn("start expert actors", "error", err)
		retry = true
	}
	x.keepResident(slices.Collect(maps.Keys(want)))
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
	return x.digest == "" || x.digest == mod.Digest
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

// short is a digest's first 12 hex digits, as logs show them.
func short(digest string) string { return digest[:min(12, len(digest))] }
