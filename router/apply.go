package router

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
)

// Apply returns the map that results from applying c to m, and whether
// anything changed. m is not modified. When something changed the result is
// a new map with Epoch m.Epoch+1 that shares the parts c did not touch with
// m (so neither may be modified); otherwise it is m itself. Apply is pure and
// deterministic: it never reads the clock (time comes from c.NowMS) and
// never depends on map iteration order.
func (m *Map) Apply(c Command) (*Map, bool, error) {
	if err := c.Validate(); err != nil {
		return m, false, err
	}
	// Shallow copy: each op clones the sub-map it changes. A hand-built Map
	// may lack the maps; they must exist to be cloned into.
	next := *m
	if next.Nodes == nil {
		next.Nodes = map[string]Node{}
	}
	if next.Placement == nil {
		next.Placement = map[ExpertID][]Replica{}
	}
	var (
		changed bool
		err     error
	)
	switch c.Op {
	case OpUpsertNode:
		changed = next.upsertNode(c)
	case OpSetNodeState:
		changed, err = next.setNodeState(c)
	case OpRemoveNode:
		changed, err = next.removeNode(c)
	case OpSetModel:
		changed = next.setModel(c)
	case OpSetReplication:
		changed = next.Replication != c.Replication
		next.Replication = c.Replication
	case OpSetPlacement:
		changed, err = next.setPlacement(c)
	case OpSetReplicaReady:
		changed, err = next.setReplicaReady(c)
	case OpAssignSession:
		changed, err = next.assignSession(c)
	case OpTouchSession:
		changed, err = next.touchSession(c)
	case OpDeleteSession:
		changed, err = next.deleteSession(c)
	case OpExpireSessions:
		changed = next.expireSessions(c)
	case OpMoveSessions:
		changed, err = next.moveSessions(c)
	case OpReportLoad:
		changed, err = next.reportLoad(c)
	case OpStageExpert:
		changed, err = next.stageExpert(c)
	case OpFlipExpert:
		changed, err = next.flipExpert(c)
	default: // Validate admits only known ops
		panic(fmt.Sprintf("router: op %q passed validation but has no handler", c.Op))
	}
	if err != nil {
		return m, false, fmt.Errorf("%s: %w", c.Op, err)
	}
	if !changed {
		return m, false, nil
	}
	next.Epoch = m.Epoch + 1
	return &next, true, nil
}

func (m *Map) upsertNode(c Command) bool {
	n := cloneNode(*c.Node)
	old, exists := m.Nodes[n.ID]
	switch {
	case n.State == "" && exists:
		n.State = old.State
	case n.State == "":
		n.State = NodeJoining
	}
	if n.UpdatedMS == 0 {
		if exists && old.State == n.State {
			n.UpdatedMS = old.UpdatedMS
		} else {
			n.UpdatedMS = c.NowMS
		}
	}
	if exists && reflect.DeepEqual(old, n) {
		return false
	}
	m.Nodes = maps.Clone(m.Nodes)
	m.Nodes[n.ID] = n
	if exists && old.Boot != 0 && n.Boot != old.Boot {
		m.unreadyReplicasOn(n.ID) // a restart: its actors are gone
	}
	return true
}

// unreadyReplicasOn clears the Ready and Staged flags of node's replicas.
func (m *Map) unreadyReplicasOn(node string) {
	var p map[ExpertID][]Replica
	for e, rs := range m.Placement {
		i := slices.IndexFunc(rs, func(r Replica) bool { return r.Node == node && (r.Ready || r.Staged) })
		if i < 0 {
			continue
		}
		if p == nil {
			p = maps.Clone(m.Placement)
		}
		rs = slices.Clone(rs)
		for j := range rs {
			if rs[j].Node == node {
				rs[j].Ready, rs[j].Staged = false, false
			}
		}
		p[e] = rs
	}
	if p != nil {
		m.Placement = p
	}
}

func (m *Map) setNodeState(c Command) (bool, error) {
	n, ok := m.Nodes[c.NodeID]
	if !ok {
		return false, fmt.Errorf("%w %q", ErrUnknownNode, c.NodeID)
	}
	if n.State == c.State {
		return false, nil
	}
	if c.OthersActive && !slices.ContainsFunc(m.ActiveNodes(), func(o Node) bool { return o.ID != n.ID }) {
		return false, fmt.Errorf("%w: %s is the only active node; nothing could take its experts and sessions", ErrNoActiveNode, n.ID)
	}
	n.State = c.State // n's slices are shared with the old map but not modified
	if c.NowMS > 0 {
		n.UpdatedMS = c.NowMS
	}
	m.Nodes = maps.Clone(m.Nodes)
	m.Nodes[n.ID] = n
	return true, nil
}

func (m *Map) removeNode(c Command) (bool, error) {
	if _, ok := m.Nodes[c.NodeID]; !ok {
		return false, fmt.Errorf("%w %q", ErrUnknownNode, c.NodeID)
	}
	m.Nodes = maps.Clone(m.Nodes)
	delete(m.Nodes, c.NodeID)
	if _, ok := m.Loads[c.NodeID]; ok {
		m.Loads = maps.Clone(m.Loads)
		delete(m.Loads, c.NodeID)
	}
	var p map[ExpertID][]Replica // cloned on the first affected expert
	for e, rs := range m.Placement {
		i := slices.IndexFunc(rs, func(r Replica) bool { return r.Node == c.NodeID })
		if i < 0 {
			continue
		}
		if p == nil {
			p = maps.Clone(m.Placement)
		}
		kept := slices.Delete(slices.Clone(rs), i, i+1)
		if len(kept) == 0 {
			delete(p, e)
		} else {
			p[e] = kept
		}
	}
	if p != nil {
		m.Placement = p
	}
	return true, nil
}

func (m *Map) setModel(c Command) bool {
	if c.IfNoModel && m.Model != nil {
		return false // another node's announcement came first
	}
	mod := *c.Model
	versions := slices.Clone(m.Versions)
	i := slices.IndexFunc(versions, func(v Model) bool { return v.ID == mod.ID && v.Version == mod.Version })
	if i >= 0 {
		versions[i] = mod
	} else {
		versions = append(versions, mod)
		i = len(versions) - 1
	}
	live := m.Model
	switch {
	case mod.Live:
		for j := range versions {
			if j != i {
				versions[j].Live = false
			}
		}
		live = &mod
	case live != nil && live.ID == mod.ID && live.Version == mod.Version:
		live = nil // the live version was taken out of service
	}
	if reflect.DeepEqual(versions, m.Versions) && reflect.DeepEqual(live, m.Model) {
		return false
	}
	if digest(live) != digest(m.Model) && len(m.Placement) > 0 {
		// Replicas were loaded from the old file: none is ready for the
		// new one until its host reports it loaded.
		p := make(map[ExpertID][]Replica, len(m.Placement))
		for id, rs := range m.Placement {
			nrs := slices.Clone(rs)
			for k := range nrs {
				nrs[k].Ready, nrs[k].Staged = false, false
			}
			p[id] = nrs
		}
		m.Placement = p
	}
	if digest(live) != digest(m.Model) {
		m.ExpertVersions = nil // updates were to the old model's experts
	}
	m.Versions, m.Model = versions, live
	return true
}

// digest is the live model's file digest, "" for none.
func digest(m *Model) string {
	if m == nil {
		return ""
	}
	return m.Digest
}

func (m *Map) setPlacement(c Command) (bool, error) {
	p, err := placementFromEntries(c.Placement)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	for _, pe := range c.Placement {
		for _, r := range pe.Replicas {
			if _, ok := m.Nodes[r.Node]; !ok {
				return false, fmt.Errorf("%w %q (replica of %v)", ErrUnknownNode, r.Node, pe.Expert)
			}
		}
	}
	// Which replicas exist is the command's; whether an existing one is
	// ready (or staged) is what its host reported (set_replica_ready). The
	// leader computes a placement from the map it read, and a set_model or a
	// flip may commit in between: flags carried over from that read would
	// mark replicas ready for weights they never loaded. So a replica that
	// exists keeps the flags it has here; a new one takes the command's
	// (Place adds replicas not ready).
	for e, rs := range p {
		for i := range rs {
			for _, c := range m.Placement[e] {
				if c.Node == rs[i].Node && c.Device == rs[i].Device {
					rs[i].Ready, rs[i].Staged = c.Ready, c.Staged
				}
			}
		}
	}
	if reflect.DeepEqual(p, m.Placement) {
		return false, nil
	}
	m.Placement = p
	return true, nil
}

func (m *Map) assignSession(c Command) (bool, error) {
	s := *c.Session
	if s.Home == "" {
		home, ok := chooseHome(m, s.ID, c.NowMS, "", nil, false)
		if !ok {
			return false, ErrNoActiveNode
		}
		s.Home = home
	} else if _, ok := m.Nodes[s.Home]; !ok {
		return false, fmt.Errorf("%w %q (home of session %q)", ErrUnknownNode, s.Home, s.ID)
	}
	if s.LastUseMS == 0 {
		s.LastUseMS = c.NowMS
	}
	old, known := m.Sessions.Get(s.ID)
	if known && old.Owner != "" {
		s.Owner = old.Owner // a re-home keeps the session's owner
	}
	if known && old == s {
		return false, nil
	}
	if !known && m.Sessions.Len() >= maxSessions {
		// Expired sessions go first (as expire_sessions would drop them),
		// then the least recently used of the owner holding the most.
		m.Sessions = m.Sessions.DeleteFunc(func(x Session) bool { return x.expired(c.NowMS) })
		if m.Sessions.Len() >= maxSessions {
			m.Sessions = m.Sessions.Delete(sessionToEvict(m.Sessions))
		}
	}
	m.Sessions = m.Sessions.Set(s)
	return true, nil
}

// MaxSessions is the most sessions the map holds. A new session beyond it
// drops the expired ones, else evicts the least recently used session of
// the owner holding the most (ties: the smallest owner; then the oldest
// LastUseMS, then the smallest id: the same on every replica), whose next
// request is simply given a home again. So a client that invents session
// ids evicts its own sessions, not other clients'. It bounds what clients
// inventing session ids can make every replica keep (each session costs a
// map entry, copied on every session change) until the sessions' TTL ends.
// Replicas of builds before the cap keep every session: in a cluster
// upgraded node by node past MaxSessions their maps differ in sessions
// only, which route to live homes either way.
const MaxSessions = 50_000

var maxSessions = MaxSessions // tests lower it

// expired reports whether s's TTL has ended at now (what expire_sessions
// drops).
func (s Session) expired(now int64) bool { return s.ExpiresMS <= now }

// sessionToEvict returns the id of the least recently used session of the
// owner holding the most sessions (see MaxSessions).
func sessionToEvict(ss SessionTable) string {
	count := map[string]int{}
	for _, s := range ss.All() {
		count[s.Owner]++
	}
	top, most := "", -1
	for o, n := range count {
		if n > most || (n == most && o < top) {
			top, most = o, n
		}
	}
	var lru Session
	first := true
	for _, s := range ss.All() {
		if s.Owner != top {
			continue
		}
		if first || s.LastUseMS < lru.LastUseMS || (s.LastUseMS == lru.LastUseMS && s.ID < lru.ID) {
			lru, first = s, false
		}
	}
	return lru.ID
}

func (m *Map) touchSession(c Command) (bool, error) {
	id := c.sessionID()
	old, ok := m.Sessions.Get(id)
	if !ok {
		return false, fmt.Errorf("%w %q", ErrUnknownSession, id)
	}
	s := old
	// Touches may reach the log out of order (several gateways): time never
	// moves backwards and the session keeps its TTL.
	s.LastUseMS = max(old.LastUseMS, c.NowMS)
	if c.Session != nil && c.Session.ExpiresMS > 0 {
		s.ExpiresMS = c.Session.ExpiresMS
	} else if ttl := old.ExpiresMS - old.LastUseMS; ttl > 0 {
		s.ExpiresMS = max(old.ExpiresMS, c.NowMS+ttl)
	}
	if s == old {
		return false, nil
	}
	m.Sessions = m.Sessions.Set(s)
	return true, nil
}

func (m *Map) deleteSession(c Command) (bool, error) {
	id := c.sessionID()
	if _, ok := m.Sessions.Get(id); !ok {
		return false, fmt.Errorf("%w %q", ErrUnknownSession, id)
	}
	m.Sessions = m.Sessions.Delete(id)
	return true, nil
}

func (m *Map) expireSessions(c Command) bool {
	n := m.Sessions.Len()
	m.Sessions = m.Sessions.DeleteFunc(func(s Session) bool { return s.expired(c.NowMS) })
	return m.Sessions.Len() != n
}

func (m *Map) moveSessions(c Command) (bool, error) {
	ids := m.SessionsOn(c.NodeID) // sorted, so the outcome is deterministic
	if len(ids) == 0 {
		return false, nil
	}
	counts := sessionCounts(m, c.NowMS, c.NodeID, false)
	if len(counts) == 0 {
		return false, fmt.Errorf("%w to take the sessions of %q", ErrNoActiveNode, c.NodeID)
	}
	sessions := m.Sessions
	for _, id := range ids {
		home, _ := chooseHome(m, id, c.NowMS, c.NodeID, counts, false)
		s, _ := sessions.Get(id)
		s.Home = home
		sessions = sessions.Set(s)
		counts[home]++
	}
	m.Sessions = sessions
	return true, nil
}

// reportLoad replaces the node's load report with c.Load, zero rates
// dropped and entries sorted by expert. An empty report removes the node's.
func (m *Map) reportLoad(c Command) (bool, error) {
	if _, ok := m.Nodes[c.NodeID]; !ok {
		return false, fmt.Errorf("%w %q", ErrUnknownNode, c.NodeID)
	}
	var ls []ExpertLoad
	for _, l := range c.Load {
		if l.RowsPerSec > 0 {
			ls = append(ls, l)
		}
	}
	slices.SortFunc(ls, func(a, b ExpertLoad) int { return compareExperts(a.Expert, b.Expert) })
	old, had := m.Loads[c.NodeID]
	if len(ls) == 0 {
		if !had {
			return false, nil
		}
		m.Loads = maps.Clone(m.Loads)
		delete(m.Loads, c.NodeID)
		return true, nil
	}
	nl := NodeLoad{Experts: ls, AtMS: c.NowMS}
	if had && reflect.DeepEqual(old, nl) {
		return false, nil
	}
	m.Loads = maps.Clone(m.Loads)
	if m.Loads == nil {
		m.Loads = map[string]NodeLoad{}
	}
	m.Loads[c.NodeID] = nl
	return true, nil
}
