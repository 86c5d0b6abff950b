package cluster

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// TestRaftStoreClosed: once the node closes its Raft store, a heartbeat
// still being handled may save a newer term: that is dropped instead of
// failing (Raft panics on it), while log writes and reads fail, so nothing
// is acknowledged that was not stored.
func TestRaftStoreClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	b, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &raftStore{bolt: b}
	key := []byte("CurrentTerm")
	if err := s.SetUint64(key, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLog(&raft.Log{Index: 1, Term: 3, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64(key); err != nil || v != 3 {
		t.Fatalf("term %d, %v", v, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := s.SetUint64(key, 4); err != nil {
		t.Errorf("saving a term after close: %v, want it dropped", err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n1")); err != nil {
		t.Errorf("saving a vote after close: %v, want it dropped", err)
	}
	if err := s.StoreLogs([]*raft.Log{{Index: 2, Term: 4}}); !errors.Is(err, errStoreClosed) {
		t.Errorf("storing a log after close: %v, want errStoreClosed", err)
	}
	if _, err := s.GetUint64(key); !errors.Is(err, errStoreClosed) {
		t.Errorf("reading after close: %v", err)
	}
	if _, err := s.LastIndex(); !errors.Is(err, errStoreClosed) {
		t.Errorf("last index after close: %v", err)
	}
	// What was stored before is on disk, and nothing after.
	b2, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if v, err := b2.GetUint64(key); err != nil || v != 3 {
		t.Errorf("term on disk %d, %v; want 3", v, err)
	}
	if i, err := b2.LastIndex(); err != nil || i != 1 {
		t.Errorf("last index on disk %d, %v; want 1", i, err)
	}
}
