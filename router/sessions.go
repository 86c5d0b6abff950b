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
// touch bounded the whole cluster to a few hundred touches a second. Each
// shard also counts its sessions per home and knows its earliest expiry,
// so counting the live sessions per node (how a new session's home is
// chosen) visits only the shards holding an expired session. The zero
// value is an empty table.
type SessionTable struct {
	// nil when empty; an empty shard is nil too, so equal contents have
	// one form (reflect.DeepEqual compares tables by content).
	shards *[sessionShards]*sessionShard
	n      int
}

// sessionShard is immutable once in a table.
type sessionShard struct {
	m      map[string]Session
	homes  map[string]int // sessions per home (no zero counts)
	minExp int64          // the earliest ExpiresMS
}

// newShard wraps m (which it then owns), or returns nil for no sessions.
func newShard(m map[string]Session) *sessionShard {
	if len(m) == 0 {
		return nil
	}
	sh := &sessionShard{m: m, homes: map[string]int{}}
	first := true
	for _, s := range m {
		sh.homes[s.Home]++
		if first || s.ExpiresMS < sh.minExp {
			sh.minExp, first = s.ExpiresMS, false
		}
	}
	return sh
}

func (sh *sessionShard) sessions() map[string]Session {
	if sh == nil {
		return nil
	}
	return sh.m
}

// SessionsFrom returns a table of the sessions in m (keyed by their ids).
func SessionsFrom(m map[string]Session) SessionTable {
	if len(m) == 0 {
		return SessionTable{}
	}
	var parts [sessionShards]map[string]Session
	for id, s := range m {
		i := shardOf(id)
		if parts[i] == nil {
			parts[i] = map[string]Session{}
		}
		parts[i][id] = s
	}
	t := SessionTable{shards: new([sessionShards]*sessionShard), n: len(m)}
	for i, p := range parts {
		t.shards[i] = newShard(p)
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
	s, ok := t.shards[shardOf(id)].sessions()[id]
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
			for id, s := range sh.sessions() {
				if !yield(id, s) {
					return
				}
			}
		}
	}
}

// withShard returns t with shard i's sessions replaced by m (owned) and n
// sessions in all.
func (t SessionTable) withShard(i int, m map[string]Session, n int) SessionTable {
	if n == 0 {
		return SessionTable{}
	}
	var a [sessionShards]*sessionShard
	if t.shards != nil {
		a = *t.shards
	}
	a[i] = newShard(m)
	return SessionTable{shards: &a, n: n}
}

// Set returns a table with s (by s.ID) added or replaced.
func (t SessionTable) Set(s Session) SessionTable {
	i := shardOf(s.ID)
	var cur map[string]Session
	if t.shards != nil {
		cur = t.shards[i].sessions()
	}
	m := maps.Clone(cur)
	if m == nil {
		m = map[string]Session{}
	}
	n := t.n
	if _, ok := m[s.ID]; !ok {
		n++
	}
	m[s.ID] = s
	return t.withShard(i, m, n)
}

// Delete returns a table without the session id.
func (t SessionTable) Delete(id string) SessionTable {
	if _, ok := t.Get(id); !ok {
		return t
	}
	i := shardOf(id)
	m := maps.Clone(t.shards[i].sessions())
	delete(m, id)
	return t.withShard(i, m, t.n-1)
}

// DeleteFunc returns a table without the sessions drop reports true for;
// only shards that lose a session are copied.
func (t SessionTable) DeleteFunc(drop func(Session) bool) SessionTable {
	if t.shards == nil {
		return t
	}
	out := t
	for i, sh := range t.shards {
		var kept map[string]Session
		for id, s := range sh.sessions() {
			if !drop(s) {
				continue
			}
			if kept == nil {
				kept = maps.Clone(sh.m)
			}
			delete(kept, id)
		}
		if kept != nil {
			out = out.withShard(i, kept, out.n-(len(sh.m)-len(kept)))
			if out.n == 0 {
				return out
			}
		}
	}
	return out
}

// countLive adds to counts[home], for the homes counts already holds, the
// number of sessions homed there that are live at nowMS (ExpiresMS after
// it; every session when nowMS ≤ 0). A shard whose earliest expiry is
// after nowMS adds its per-home counts without visiting its sessions.
func (t SessionTable) countLive(nowMS int64, counts map[string]int) {
	if t.shards == nil {
		return
	}
	for _, sh := range t.shards {
		if sh == nil {
			continue
		}
		if nowMS <= 0 || sh.minExp > nowMS {
			for home, n := range sh.homes {
				if c, ok := counts[home]; ok {
					counts[home] = c + n
				}
			}
			continue
		}
		for _, s := range sh.m {
			if s.ExpiresMS <= nowMS {
				continue
			}
			if c, ok := counts[s.Home]; ok {
				counts[s.Home] = c + 1
			}
		}
	}
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
