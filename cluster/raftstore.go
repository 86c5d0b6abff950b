package cluster

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// errStoreClosed is what a write to the Raft store returns once the node
// has closed it.
var errStoreClosed = errors.New("cluster: raft store closed")

// raftStore is the node's bolt store as Raft's log and stable store,
// closable while Raft may still call it. raft.Shutdown does not wait for
// the transport's connection goroutines, and a heartbeat one of them had
// begun before the shutdown still saves a newer term; Raft panics when that
// fails ("failed to save current term: database not open"), turning a
// clean stop into a crash. After close, stable-store writes (the term, the
// vote) are dropped: only such a heartbeat reaches them then (votes and
// entries go through Raft's main loop, which has ended), and a term not
// saved is learnt again after a restart. Log writes fail, so no entry is
// ever acknowledged that was not stored.
type raftStore struct {
	mu     sync.RWMutex
	closed bool
	bolt   *raftboltdb.BoltStore
}

var (
	_ raft.LogStore    = (*raftStore)(nil)
	_ raft.StableStore = (*raftStore)(nil)
)

// Close closes the bolt store once no call is in it; later calls fail or,
// for stable-store writes, do nothing.
func (s *raftStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.bolt.Close()
}

// use runs f on the open store, or returns errStoreClosed.
func (s *raftStore) use(f func(*raftboltdb.BoltStore) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStoreClosed
	}
	return f(s.bolt)
}

func (s *raftStore) FirstIndex() (i uint64, err error) {
	err = s.use(func(b *raftboltdb.BoltStore) error { i, err = b.FirstIndex(); return err })
	return i, err
}

func (s *raftStore) LastIndex() (i uint64, err error) {
	err = s.use(func(b *raftboltdb.BoltStore) error { i, err = b.LastIndex(); return err })
	return i, err
}

func (s *raftStore) GetLog(index uint64, log *raft.Log) error {
	return s.use(func(b *raftboltdb.BoltStore) error { return b.GetLog(index, log) })
}

func (s *raftStore) StoreLog(log *raft.Log) error {
	return s.use(func(b *raftboltdb.BoltStore) error { return b.StoreLog(log) })
}

func (s *raftStore) StoreLogs(logs []*raft.Log) error {
	return s.use(func(b *raftboltdb.BoltStore) error { return b.StoreLogs(logs) })
}

func (s *raftStore) DeleteRange(lo, hi uint64) error {
	return s.use(func(b *raftboltdb.BoltStore) error { return b.DeleteRange(lo, hi) })
}

func (s *raftStore) Get(key []byte) (v []byte, err error) {
	err = s.use(func(b *raftboltdb.BoltStore) error { v, err = b.Get(key); return err })
	return v, err
}

func (s *raftStore) GetUint64(key []byte) (v uint64, err error) {
	err = s.use(func(b *raftboltdb.BoltStore) error { v, err = b.GetUint64(key); return err })
	return v, err
}

func (s *raftStore) Set(key, val []byte) error {
	return s.dropWhenClosed(s.use(func(b *raftboltdb.BoltStore) error { return b.Set(key, val) }))
}

func (s *raftStore) SetUint64(key []byte, val uint64) error {
	return s.dropWhenClosed(s.use(func(b *raftboltdb.BoltStore) error { return b.SetUint64(key, val) }))
}

// dropWhenClosed turns a stable-store write's errStoreClosed into nil.
func (s *raftStore) dropWhenClosed(err error) error {
	if errors.Is(err, errStoreClosed) {
		return nil
	}
	return err
}
