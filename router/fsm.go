package router

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// SnapshotVersion is the snapshot encoding this package writes and restores.
const SnapshotVersion = 1

// FSM is the Raft state machine holding the cluster map. Raft calls Apply,
// Snapshot and Restore; everyone else reads Map and waits on Changed.
//
// Writes are copy-on-write: Apply builds a new *Map (sharing what the
// command did not touch) and swaps it in atomically, so readers never lock
// and never see a half-applied command.
type FSM struct {
	cur atomic.Pointer[Map]

	mu      sync.Mutex    // serialises writers; guards changed
	changed chan struct{} // closed and replaced on every change
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM holding NewMap().
func NewFSM() *FSM {
	f := &FSM{changed: make(chan struct{})}
	f.cur.Store(NewMap())
	return f
}

// Map returns the current map. It never blocks. The map is immutable:
// Clone it to derive another.
func (f *FSM) Map() *Map { return f.cur.Load() }

// Changed returns a channel that is closed when the map next changes. To
// wait for a condition: take the channel, then read Map(), then wait on the
// channel if the condition does not hold yet.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Apply implements raft.FSM. It returns nil, or an error (wrapping one of
// this package's sentinels) when the entry does not decode or the command
// does not apply; then the map is unchanged. Entries that are not commands
// are ignored.
func (f *FSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := DecodeCommand(l.Data)
	if err != nil {
		return err
	}
	return f.ApplyCommand(c)
}

// ApplyCommand applies c directly, outside Raft. Raft-replicated maps must go
// through Apply on every peer; this is for single-node tools and tests.
func (f *FSM) ApplyCommand(c Command) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	next, changed, err := f.cur.Load().Apply(c)
	if err != nil {
		return err
	}
	if changed {
		f.swap(next)
	}
	return nil
}

// swap installs m and wakes waiters. f.mu must be held.
func (f *FSM) swap(m *Map) {
	f.cur.Store(m)
	close(f.changed)
	f.changed = make(chan struct{})
}

// snapshotJSON is the snapshot's wire form.
type snapshotJSON struct {
	V   int  `json:"v"`
	Map *Map `json:"map"`
}

// Snapshot implements raft.FSM. It is cheap: the current map is immutable,
// so the snapshot holds a pointer to it and encodes it in Persist.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{m: f.cur.Load()}, nil
}

// Restore implements raft.FSM: it replaces the map with the one in rc, which
// it closes.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s snapshotJSON
	if err := json.NewDecoder(rc).Decode(&s); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	if s.V != SnapshotVersion {
		return fmt.Errorf("%w: version %d", ErrBadSnapshot, s.V)
	}
	if s.Map == nil {
		return fmt.Errorf("%w: no map", ErrBadSnapshot)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.swap(s.Map)
	return nil
}

type fsmSnapshot struct{ m *Map }

// Persist writes the snapshot as JSON: {"v":1,"map":{...}}.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	err := json.NewEncoder(sink).Encode(snapshotJSON{V: SnapshotVersion, Map: s.m})
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("router: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
