package router

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
)

// Any bytes in a log entry give a command or an error, never a panic, and
// applying a decoded command to a populated map never panics either.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range fixture() {
		b, _ := c.Encode()
		f.Add(b)
	}
	e := ExpertID{0, 1}
	for _, c := range []Command{
		{Op: OpSetReplicaReady, Expert: &e, NodeID: "b", Ready: true},
		{Op: OpMoveSessions, NodeID: "c", NowMS: 1},
		{Op: OpTouchSession, SessionID: "s1", NowMS: 1500},
		{Op: OpRemoveNode, NodeID: "a"},
	} {
		b, _ := c.Encode()
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"op":"set_placement","placement":[{"expert":{"layer":-1,"index":0}}]}`))
	f.Add([]byte(`{"v":9}`))
	base := NewFSM()
	for _, c := range fixture() {
		if err := base.ApplyCommand(withVersion(c)); err != nil {
			f.Fatal(err)
		}
	}
	m := base.Map()
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		before, _ := json.Marshal(m)
		next, changed, err := m.Apply(c)
		if err != nil || !changed {
			if next != m {
				t.Fatal("failed or no-op Apply returned a new map")
			}
		} else if next.Epoch != m.Epoch+1 {
			t.Fatalf("epoch %d after %d", next.Epoch, m.Epoch)
		}
		if after, _ := json.Marshal(m); !bytes.Equal(before, after) {
			t.Fatal("Apply modified its input map")
		}
	})
}

// Any snapshot bytes restore or fail cleanly; a restored map re-encodes to
// a snapshot that restores to an equal map.
func FuzzRestore(f *testing.F) {
	g := NewFSM()
	for _, c := range fixture() {
		if err := g.ApplyCommand(withVersion(c)); err != nil {
			f.Fatal(err)
		}
	}
	snap, _ := g.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		f.Fatal(err)
	}
	f.Add(sink.Bytes())
	f.Add([]byte(`{"v":1,"map":{}}`))
	f.Add([]byte(`{"v":1,"map":{"nodes":null,"placement":[{"expert":{"layer":0,"index":0},"replicas":[]}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		f1 := NewFSM()
		if err := f1.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
			return
		}
		snap, _ := f1.Snapshot()
		var sink memSink
		if err := snap.Persist(&sink); err != nil {
			t.Fatal(err)
		}
		f2 := NewFSM()
		if err := f2.Restore(io.NopCloser(&sink)); err != nil {
			t.Fatal(err)
		}
		if !f1.Map().Equal(f2.Map()) {
			t.Fatal("snapshot round trip differs")
		}
	})
}

func withVersion(c Command) Command {
	c.V = CommandVersion
	return c
}
