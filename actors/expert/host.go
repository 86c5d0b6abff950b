package expert

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// StopTimeout bounds how long Stop waits for an expert actor to finish the
// requests already in its mailbox.
const StopTimeout = 10 * time.Second

// Host runs the expert actors of one node on its actor system: one actor per
// hosted expert version, named VersionName(id, version), over weights bound
// from the node's own model file (the base version) or from expert files
// (other versions, found through the host's VersionSource). Its methods are
// safe for concurrent use.
type Host struct {
	sys   *actor.ActorSystem
	w     *model.Weights
	pool  *kernels.Pool
	epoch func() uint64

	faults   *Faults // set by EnableFaults; nil: no fault injection
	mu       sync.Mutex
	versions VersionSource
	running  map[key]hosted
	batch    *actor.PID // the batch actor, spawned with the first expert
}

// VersionSource binds a version other than router.BaseVersion of expert
// id: the matrices of its expert file, which must stay valid while the
// host runs it. It may block (a node may fetch the file from a peer).
type VersionSource func(id router.ExpertID, version string) (*model.Expert, error)

type key struct {
	id      router.ExpertID
	version string
}

type hosted struct {
	e   *Expert
	pid *actor.PID
}

// NewHost returns a host with no experts running. epoch (may be nil) reports
// the node's current map epoch, echoed in responses.
func NewHost(sys *actor.ActorSystem, w *model.Weights, pool *kernels.Pool, epoch func() uint64) *Host {
	return &Host{sys: sys, w: w, pool: pool, epoch: epoch, running: map[key]hosted{}}
}

// EnableFaults turns on fault injection (see Faults) for the experts this
// host starts from now on, and returns the faults to set. Call it before
// the first Start; it is off by default.
func (h *Host) EnableFaults() *Faults {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.faults == nil {
		h.faults = &Faults{}
	}
	return h.faults
}

// SetVersionSource sets where versions other than the base come from;
// without one only base versions can start.
func (h *Host) SetVersionSource(src VersionSource) {
	h.mu.Lock()
	h.versions = src
	h.mu.Unlock()
}

// Start binds expert id's base version and spawns its actor. Starting a
// running expert does nothing.
func (h *Host) Start(id router.ExpertID) error { return h.StartVersion(id, router.BaseVersion) }

// StartVersion binds version of expert id and spawns its actor. Starting a
// running version does nothing.
func (h *Host) StartVersion(id router.ExpertID, version string) error {
	k := key{id, version}
	h.mu.Lock()
	_, ok := h.running[k]
	src := h.versions
	h.mu.Unlock()
	if ok {
		return nil
	}
	var e *Expert
	if version == router.BaseVersion {
		var err error
		if e, err = New(h.w, id, h.pool); err != nil {
			return err
		}
	} else {
		if src == nil {
			return fmt.Errorf("%w: %v version %.12s: no version source", ErrNotHosted, id, version)
		}
		ffn, err := src(id, version) // may block: outside the lock
		if err != nil {
			return fmt.Errorf("expert: %v version %.12s: %w", id, version, err)
		}
		e = NewVersion(id, version, ffn, h.w.Dim, h.pool)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.running[k]; ok {
		return nil // started meanwhile
	}
	if h.batch == nil {
		bp := actor.PropsFromProducer(func() actor.Actor { return &batchActor{h: h} })
		pid, err := h.sys.Root.SpawnNamed(bp, BatchName)
		if errors.Is(err, actor.ErrNameExists) {
			_ = h.sys.Root.StopFuture(pid).Wait()
			pid, err = h.sys.Root.SpawnNamed(bp, BatchName)
		}
		if err != nil {
			return fmt.Errorf("expert: spawn %s: %w", BatchName, err)
		}
		h.batch = pid
	}
	name := VersionName(id, version)
	// The name holds the version's first 16 hex digits: two running versions
	// sharing them would share an actor, and calls for one would compute the
	// other's weights. Refuse the second (a crafted file, 2^32 hashes away).
	for rk := range h.running {
		if rk.id == id && rk.version != version && VersionName(id, rk.version) == name {
			return fmt.Errorf("%w: %v version %.20s… has the actor name of running version %.20s…", ErrVersionCollision, id, version, rk.version)
		}
	}
	props := actor.PropsFromProducer(func() actor.Actor { return &expertActor{e: e, epoch: h.epoch, faults: h.faults} })
	pid, err := h.sys.Root.SpawnNamed(props, name)
	if errors.Is(err, actor.ErrNameExists) {
		// A previous incarnation is still stopping (StopVersion waits for
		// it outside the lock): wait for it, without the lock, which
		// LocalVersion (every dispatch) takes, then retry.
		h.mu.Unlock()
		_ = h.sys.Root.StopFuture(pid).Wait()
		h.mu.Lock()
		if _, ok := h.running[k]; ok {
			return nil // started meanwhile
		}
		pid, err = h.sys.Root.SpawnNamed(props, name)
	}
	if err != nil {
		return fmt.Errorf("expert: spawn %v: %w", id, err)
	}
	h.running[k] = hosted{e: e, pid: pid}
	return nil
}

// Stop stops every version of expert id.
func (h *Host) Stop(id router.ExpertID) {
	for _, k := range h.keys() {
		if k.id == id {
			h.StopVersion(id, k.version)
		}
	}
}

// StopVersion stops version of expert id's actor after the requests already
// queued for it (a poison pill queues behind them), waiting up to
// StopTimeout. Stopping a version that is not running does nothing.
func (h *Host) StopVersion(id router.ExpertID, version string) {
	h.mu.Lock()
	r, ok := h.running[key{id, version}]
	delete(h.running, key{id, version})
	h.mu.Unlock()
	if ok {
		_ = h.sys.Root.PoisonFuture(r.pid).Wait()
		// Scratch grown for this expert is not kept for the rest.
		scratches.reset()
	}
}

// Sync starts the base version of the experts in want that are not running
// and stops every running version not wanted. It returns the first start
// error (and goes on with the others).
func (h *Host) Sync(want []router.ExpertID) error {
	m := make(map[router.ExpertID][]string, len(want))
	for _, id := range want {
		m[id] = []string{router.BaseVersion}
	}
	return h.SyncVersions(m)
}

// SyncVersions makes the running actors exactly want's versions of want's
// experts: it stops the others (after their queued requests), then starts
// the missing ones in (layer, index) order. It returns the first start
// error and goes on with the others.
func (h *Host) SyncVersions(want map[router.ExpertID][]string) error {
	for _, k := range h.keys() {
		if !slices.Contains(want[k.id], k.version) {
			h.StopVersion(k.id, k.version)
		}
	}
	ids := slices.Collect(maps.Keys(want))
	slices.SortFunc(ids, compareIDs)
	var first error
	for _, id := range ids {
		for _, v := range want[id] {
			if err := h.StartVersion(id, v); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Local returns the running base version of expert id for an in-process
// call (no message, no serialisation).
func (h *Host) Local(id router.ExpertID) (*Expert, bool) {
	return h.LocalVersion(id, router.BaseVersion)
}

// LocalVersion returns the running version of expert id for an in-process
// call.
func (h *Host) LocalVersion(id router.ExpertID, version string) (*Expert, bool) {
	h.mu.Lock()
	r, ok := h.running[key{id, version}]
	h.mu.Unlock()
	return r.e, ok
}

// Hosted lists the experts with at least one running version, in (layer,
// index) order.
func (h *Host) Hosted() []router.ExpertID {
	var ids []router.ExpertID
	for _, k := range h.keys() {
		if len(ids) == 0 || ids[len(ids)-1] != k.id {
			ids = append(ids, k.id)
		}
	}
	return ids
}

// Versions lists the running versions of expert id.
func (h *Host) Versions(id router.ExpertID) []string {
	var out []string
	for _, k := range h.keys() {
		if k.id == id {
			out = append(out, k.version)
		}
	}
	return out
}

// keys lists the running (expert, version) pairs sorted by expert, then
// version.
func (h *Host) keys() []key {
	h.mu.Lock()
	ks := slices.Collect(maps.Keys(h.running))
	h.mu.Unlock()
	slices.SortFunc(ks, func(a, b key) int {
		return cmp.Or(compareIDs(a.id, b.id), cmp.Compare(a.version, b.version))
	})
	return ks
}

func compareIDs(a, b router.ExpertID) int {
	return cmp.Or(cmp.Compare(a.Layer, b.Layer), cmp.Compare(a.Index, b.Index))
}

// Loads returns every running expert's counters, summed over its versions.
func (h *Host) Loads() map[router.ExpertID]Load {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[router.ExpertID]Load, len(h.running))
	for k, r := range h.running {
		l, x := out[k.id], r.e.Load()
		out[k.id] = Load{Calls: l.Calls + x.Calls, Rows: l.Rows + x.Rows, Busy: l.Busy + x.Busy}
	}
	return out
}

// Close stops every expert and the batch actor.
func (h *Host) Close() {
	for _, k := range h.keys() {
		h.StopVersion(k.id, k.version)
	}
	h.mu.Lock()
	pid := h.batch
	h.batch = nil
	h.mu.Unlock()
	if pid != nil {
		_ = h.sys.Root.StopFuture(pid).Wait()
	}
}
