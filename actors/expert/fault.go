package expert

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/conclave-ai/conclave/router"
)

// MaxFaultDelay bounds an injected delay, so a forgotten fault cannot hold
// an actor's mailbox (and Host.Stop) for long.
const MaxFaultDelay = 60 * time.Second

// ErrBadFault is wrapped by Faults.Set's errors.
var ErrBadFault = errors.New("expert: bad fault")

// Faults is fault injection for chaos tests and SRE drills: a delay per
// expert that the expert's actor sleeps before computing each request, as a
// slow or overloaded device would. A Host has none unless
// Host.EnableFaults was called; a nil *Faults injects nothing. Only calls
// that reach the actor (remote dispatch) are delayed; a node's in-process
// calls to its own replicas are not. Safe for concurrent use.
type Faults struct {
	mu    sync.Mutex
	delay map[router.ExpertID]time.Duration
}

// Set makes expert id's actor sleep d before each computation; d = 0
// clears it. d must be in [0, MaxFaultDelay].
func (f *Faults) Set(id router.ExpertID, d time.Duration) error {
	if d < 0 || d > MaxFaultDelay {
		return fmt.Errorf("%w: delay %v not in [0, %v]", ErrBadFault, d, MaxFaultDelay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d == 0 {
		delete(f.delay, id)
		return nil
	}
	if f.delay == nil {
		f.delay = map[router.ExpertID]time.Duration{}
	}
	f.delay[id] = d
	return nil
}

// Clear removes every injected fault.
func (f *Faults) Clear() {
	f.mu.Lock()
	clear(f.delay)
	f.mu.Unlock()
}

// Delays returns the injected delays.
func (f *Faults) Delays() map[router.ExpertID]time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[router.ExpertID]time.Duration, len(f.delay))
	for id, d := range f.delay {
		out[id] = d
	}
	return out
}

// before runs in expert id's actor before it computes: it sleeps the
// injected delay, if any.
func (f *Faults) before(id router.ExpertID) {
	if d := f.delayOf(id); d > 0 {
		time.Sleep(d)
	}
}

// delayOf is expert id's injected delay (0 for a nil *Faults).
func (f *Faults) delayOf(id router.ExpertID) time.Duration {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delay[id]
}
