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
// hosted expert, named Name(id), over weights bound from the node's own
// model file. Its methods are safe for concurrent use.
type Host struct {
	sys   *actor.ActorSystem
	w     *model.Weights
	pool  *kernels.Pool
	epoch func() uint64

	faults  *Faults // set by EnableFaults; nil: no fault injection
	mu      sync.Mutex
	running map[router.ExpertID]hosted
}

type hosted struct {
	e   *Expert
	pid *actor.PID
}

// NewHost returns a host with no experts running. epoch (may be nil) reports
// the node's current map epoch, echoed in responses.
func NewHost(sys *actor.ActorSystem, w *model.Weights, pool *kernels.Pool, epoch func() uint64) *Host {
	return &Host{sys: sys, w: w, pool: pool, epoch: epoch, running: map[router.ExpertID]hosted{}}
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

// Start binds expert id and spawns its actor. Starting a running expert
// does nothing.
func (h *Host) Start(id router.ExpertID) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.running[id]; ok {
		return nil
	}
	e, err := New(h.w, id, h.pool)
	if err != nil {
		return err
	}
	props := actor.PropsFromProducer(func() actor.Actor { return &expertActor{e: e, epoch: h.epoch, faults: h.faults} })
	pid, err := h.sys.Root.SpawnNamed(props, Name(id))
	if errors.Is(err, actor.ErrNameExists) {
		// A previous incarnation is still stopping: wait for it, then retry.
		_ = h.sys.Root.StopFuture(pid).Wait()
		pid, err = h.sys.Root.SpawnNamed(props, Name(id))
	}
	if err != nil {
		return fmt.Errorf("expert: spawn %v: %w", id, err)
	}
	h.running[id] = hosted{e: e, pid: pid}
	return nil
}

// Stop stops expert id's actor after the requests already queued for it
// (a poison pill queues behind them), waiting up to StopTimeout. Stopping an
// expert that is not running does nothing.
func (h *Host) Stop(id router.ExpertID) {
	h.mu.Lock()
	r, ok := h.running[id]
	delete(h.running, id)
	h.mu.Unlock()
	if ok {
		_ = h.sys.Root.PoisonFuture(r.pid).Wait()
	}
}

// Sync starts the experts in want that are not running and stops the
// running ones not in want. It returns the first start error (and goes on
// with the others).
func (h *Host) Sync(want []router.ExpertID) error {
	set := make(map[router.ExpertID]bool, len(want))
	for _, id := range want {
		set[id] = true
	}
	for _, id := range h.Hosted() {
		if !set[id] {
			h.Stop(id)
		}
	}
	var first error
	for _, id := range want {
		if err := h.Start(id); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Local returns the running expert id for an in-process call (no message,
// no serialisation).
func (h *Host) Local(id router.ExpertID) (*Expert, bool) {
	h.mu.Lock()
	r, ok := h.running[id]
	h.mu.Unlock()
	return r.e, ok
}

// Hosted lists the running experts in (layer, index) order.
func (h *Host) Hosted() []router.ExpertID {
	h.mu.Lock()
	ids := slices.Collect(maps.Keys(h.running))
	h.mu.Unlock()
	slices.SortFunc(ids, func(a, b router.ExpertID) int {
		return cmp.Or(cmp.Compare(a.Layer, b.Layer), cmp.Compare(a.Index, b.Index))
	})
	return ids
}

// Loads returns every running expert's counters.
func (h *Host) Loads() map[router.ExpertID]Load {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[router.ExpertID]Load, len(h.running))
	for id, r := range h.running {
		out[id] = r.e.Load()
	}
	return out
}

// Close stops every expert.
func (h *Host) Close() {
	for _, id := range h.Hosted() {
		h.Stop(id)
	}
}
