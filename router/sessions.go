package router

import (
	"encoding/json"
	"iter"
	"maps"
)

// sessionShards is how many shards a SessionTable spreads its sessions
// over: a change copies one shard (about MaxSessions/256 ≈ 200 entries at
// the cap) and the shard array (2 KiB), not every session.
const sessionShards = 256

// SessionTable is an immutable set of sessions keyed by id, the map's
// Sessions. Changing it (Set, Delete, DeleteFunc) returns a new table that
// shares every untouched shard with the old one, so a map snapshot costs
// O(shard) per session change instead of O(sessions): every touch of a
// session is a Raft command, and a map of MaxSessions sessions copied per
// touch bounded the whole cluster to a few hundred touches a second. The
// zero value is an empty table.
type SessionTable struct {
	// nil when empty; an empty shard is nil too, so equal contents have
	// one form (reflect.DeepEqual compares tables by content).
	shards *[sessionShards]map[string]Session
	n      int
}

// SessionsFrom returns a table of the sessions in m (keyed by their ids).
func SessionsFrom(m map[string]Session) SessionTable {
	var t SessionTable
	for id, s := range m {
		t = t.put(id, s, false)
	}
	return t
}

func shardOf(id string) int {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % sessionShards)
}

// Len is the number of sessions.
func (t SessionTable) Len() int { return t.n }

// Get returns the session with id.
func (t SessionTable) Get(id string) (Session, bool) {
	if t.shards == nil {
		return Session{}, false
	}
	s, ok := t.shards[shardOf(id)][id]
	return s, ok
}

// At returns the session with id, or the zero Session.
func (t SessionTable) At(id string) Session {
	s, _ := t.Get(id)
	return s
}

// All yields every session (in no particular order).
func (t SessionTable) All() iter.Seq2[string, Session] {
	return func(yield func(string, Session) bool) {
		if t.shards == nil {
			return
		}
		for _, sh := range t.shards {
			for id, s := range sh {
				if !yield(id, s) {
					return
				}
			}
		}
	}
}

// Set returns a table with s (by s.ID) added or replaced.
func (t SessionTable) Set(s Session) SessionTable { return t.put(s.ID, s, true) }

// put adds s as id; copyOnWrite is false only while SessionsFrom builds a
// table nobody else holds.
func (t SessionTable) put(id string, s Session, copyOnWrite bool) SessionTable {
	i := shardOf(id)
	if t.shards == nil {
		t.shards = new([sessionShards]map[string]Session)
	} else if copyOnWrite {
		a := *t.shards
		t.shards = &a
	}
	sh := t.shards[i]
	if copyOnWrite || sh == nil {
		sh = maps.Clone(sh)
		if sh == nil {
			sh = map[string]Session{}
		}
	}
	if _, ok := sh[id]; !ok {
		t.n++
	}
	sh[id] = s
	t.shards[i] = sh
	return t
}

// Delete returns a table without the session id.
func (t SessionTable) Delete(id string) SessionTable {
	if _, ok := t.Get(id); !ok {
		return t
	}
	if t.n == 1 {
		return SessionTable{}
	}
	i := shardOf(id)
	a := *t.shards
	sh := maps.Clone(a[i])
	delete(sh, id)
	if len(sh) == 0 {
		sh = nil
	}
	a[i] = sh
	return SessionTable{shards: &a, n: t.n - 1}
}

// DeleteFunc returns a table without the sessions drop reports true for;
// only shards that lose a session are copied.
func (t SessionTable) DeleteFunc(drop func(Session) bool) SessionTable {
	if t.shards == nil {
		return t
	}
	var a *[sessionShards]map[string]Session
	n := t.n
	for i, sh := range t.shards {
		var kept map[string]Session
		for id, s := range sh {
			if !drop(s) {
				continue
			}
			if kept == nil {
				kept = maps.Clone(sh)
			}
			delete(kept, id)
			n--
		}
		if kept == nil {
			continue
		}
		if len(kept) == 0 {
			kept = nil
		}
		if a == nil {
			c := *t.shards
			a = &c
		}
		a[i] = kept
	}
	switch {
	case a == nil:
		return t
	case n == 0:
		return SessionTable{} // one form per content, for reflect.DeepEqual
	}
	return SessionTable{shards: a, n: n}
}

// Map returns the sessions as a new map keyed by id.
func (t SessionTable) Map() map[string]Session {
	m := make(map[string]Session, t.n)
	for id, s := range t.All() {
		m[id] = s
	}
	return m
}

// MarshalJSON encodes the table as a JSON object keyed by session id (keys
// sorted, so the encoding is canonical).
func (t SessionTable) MarshalJSON() ([]byte, error) { return json.Marshal(t.Map()) }

// UnmarshalJSON decodes what MarshalJSON encodes.
func (t *SessionTable) UnmarshalJSON(b []byte) error {
	var m map[string]Session
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*t = SessionsFrom(m)
	return nil
}
