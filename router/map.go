package router

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
)

// Map is the replicated cluster map.
//
// Values returned by FSM.Map (and by Map.Apply) are immutable snapshots that
// share unchanged parts with their predecessors: never modify one; Clone it to
// derive a new map. Nodes and Placement are never nil in a map built by this
// package.
type Map struct {
	Epoch       uint64                 `json:"epoch"`              // bumped by every applied command that changes anything
	Model       *Model                 `json:"model,omitempty"`    // the live model (nil until set)
	Versions    []Model                `json:"versions,omitempty"` // known model versions (admitted or not), in the order first set
	Nodes       map[string]Node        `json:"nodes"`
	Placement   map[ExpertID][]Replica `json:"-"` // serialised as a list of PlacementEntry (ExpertID can't be a JSON key)
	Sessions    SessionTable           `json:"sessions"`
	Replication int                    `json:"replication"` // target replicas per expert (default 1)
	// Loads holds each node's latest load report (OpReportLoad), keyed by
	// node ID; nil or absent when a node has not reported. Bounded: one
	// report per known node, at most Layers*Experts entries each.
	Loads map[string]NodeLoad `json:"loads,omitempty"`
	// ExpertVersions holds the experts whose weights were hot-updated (or
	// are being updated); nil or absent means every expert serves the model
	// file's own weights. Serialised as a list of ExpertVersionEntry.
	ExpertVersions map[ExpertID]ExpertVersion `json:"-"`
}

// PlacementEntry is one expert's replica list, the JSON form of Map.Placement.
type PlacementEntry struct {
	Expert   ExpertID  `json:"expert"`
	Replicas []Replica `json:"replicas"`
}

// DefaultReplication is the replication of a new map.
const DefaultReplication = 1

// NewMap returns the empty map an FSM starts from: epoch 0, no nodes,
// replication DefaultReplication.
func NewMap() *Map {
	return &Map{
		Nodes:       map[string]Node{},
		Placement:   map[ExpertID][]Replica{},
		Replication: DefaultReplication,
	}
}

// Clone returns a deep copy of m that shares nothing mutable with it (the
// session table is immutable and shared).
func (m *Map) Clone() *Map {
	if m == nil {
		return nil
	}
	c := &Map{
		Epoch:       m.Epoch,
		Versions:    slices.Clone(m.Versions),
		Nodes:       make(map[string]Node, len(m.Nodes)),
		Placement:   make(map[ExpertID][]Replica, len(m.Placement)),
		Sessions:    m.Sessions, // immutable: changes copy what they change
		Replication: m.Replication,
	}
	if m.Loads != nil {
		c.Loads = make(map[string]NodeLoad, len(m.Loads))
		for id, l := range m.Loads {
			c.Loads[id] = NodeLoad{Experts: slices.Clone(l.Experts), AtMS: l.AtMS}
		}
	}
	if m.Model != nil {
		mod := *m.Model
		c.Model = &mod
	}
	c.ExpertVersions = maps.Clone(m.ExpertVersions)
	for id, n := range m.Nodes {
		c.Nodes[id] = cloneNode(n)
	}
	for e, rs := range m.Placement {
		c.Placement[e] = slices.Clone(rs)
	}
	return c
}

func cloneNode(n Node) Node {
	n.Devices = slices.Clone(n.Devices)
	n.Models = slices.Clone(n.Models)
	return n
}

// compareExperts orders experts by (layer, index).
func compareExperts(a, b ExpertID) int {
	if c := cmp.Compare(a.Layer, b.Layer); c != 0 {
		return c
	}
	return cmp.Compare(a.Index, b.Index)
}

// PlacementEntries returns p as a list sorted by (layer, index). Replica
// slices are copied; experts with no replicas are left out.
func PlacementEntries(p map[ExpertID][]Replica) []PlacementEntry {
	out := make([]PlacementEntry, 0, len(p))
	for e, rs := range p {
		if len(rs) == 0 {
			continue
		}
		out = append(out, PlacementEntry{Expert: e, Replicas: slices.Clone(rs)})
	}
	slices.SortFunc(out, func(a, b PlacementEntry) int { return compareExperts(a.Expert, b.Expert) })
	return out
}

// PlacementList returns the placement sorted by (layer, index).
func (m *Map) PlacementList() []PlacementEntry { return PlacementEntries(m.Placement) }

// mapJSON is Map's wire form. Keep it in step with Map's fields.
type mapJSON struct {
	Epoch       uint64              `json:"epoch"`
	Model       *Model              `json:"model,omitempty"`
	Versions    []Model             `json:"versions,omitempty"`
	Nodes       map[string]Node     `json:"nodes"`
	Placement   []PlacementEntry    `json:"placement"`
	Sessions    SessionTable        `json:"sessions"`
	Replication int                 `json:"replication"`
	Loads       map[string]NodeLoad `json:"loads,omitempty"`

	ExpertVersions []ExpertVersionEntry `json:"expert_versions,omitempty"`
}

// MarshalJSON encodes the map with its placement as "placement": a list of
// PlacementEntry sorted by expert. The encoding is canonical: equal maps
// encode to equal bytes.
func (m Map) MarshalJSON() ([]byte, error) {
	nodes := m.Nodes
	if nodes == nil {
		nodes = map[string]Node{}
	}
	return json.Marshal(mapJSON{
		Epoch:       m.Epoch,
		Model:       m.Model,
		Versions:    m.Versions,
		Nodes:       nodes,
		Placement:   m.PlacementList(),
		Sessions:    m.Sessions,
		Replication: m.Replication,
		Loads:       m.Loads,

		ExpertVersions: m.ExpertVersionList(),
	})
}

// UnmarshalJSON decodes what MarshalJSON encodes. It rejects a placement
// that names an expert twice or a replica without a node.
func (m *Map) UnmarshalJSON(b []byte) error {
	var w mapJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	p, err := placementFromEntries(w.Placement)
	if err != nil {
		return err
	}
	ev, err := versionsFromEntries(w.ExpertVersions)
	if err != nil {
		return err
	}
	*m = Map{
		Epoch:       w.Epoch,
		Model:       w.Model,
		Versions:    w.Versions,
		Nodes:       w.Nodes,
		Placement:   p,
		Sessions:    w.Sessions,
		Replication: w.Replication,
		Loads:       w.Loads,

		ExpertVersions: ev,
	}
	if m.Nodes == nil {
		m.Nodes = map[string]Node{}
	}
	if m.Replication <= 0 {
		m.Replication = DefaultReplication
	}
	return nil
}

// placementFromEntries builds a placement map, checking that each expert
// appears once, has non-negative coordinates, and lists each node once.
// Entries without replicas are dropped.
func placementFromEntries(list []PlacementEntry) (map[ExpertID][]Replica, error) {
	p := make(map[ExpertID][]Replica, len(list))
	for _, pe := range list {
		e := pe.Expert
		if e.Layer < 0 || e.Index < 0 {
			return nil, fmt.Errorf("%w: negative expert %v", ErrBadPlacement, e)
		}
		if _, dup := p[e]; dup {
			return nil, fmt.Errorf("%w: expert %v listed twice", ErrBadPlacement, e)
		}
		for i, r := range pe.Replicas {
			if r.Node == "" {
				return nil, fmt.Errorf("%w: expert %v replica %d has no node", ErrBadPlacement, e, i)
			}
			for _, q := range pe.Replicas[:i] {
				if q.Node == r.Node {
					return nil, fmt.Errorf("%w: expert %v has two replicas on node %q", ErrBadPlacement, e, r.Node)
				}
			}
		}
		if len(pe.Replicas) > 0 {
			p[e] = slices.Clone(pe.Replicas)
		}
	}
	return p, nil
}

// Equal reports whether m and o hold the same content (epoch included).
func (m *Map) Equal(o *Map) bool {
	if m == nil || o == nil {
		return m == o
	}
	a, errA := json.Marshal(m)
	b, errB := json.Marshal(o)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// Node returns the node with the given ID.
func (m *Map) Node(id string) (Node, bool) {
	n, ok := m.Nodes[id]
	return n, ok
}

// ActiveNodes returns the nodes in state active, sorted by ID.
func (m *Map) ActiveNodes() []Node {
	var out []Node
	for _, n := range m.Nodes {
		if n.State == NodeActive {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// ExpertsOn returns the experts with a replica on node, sorted by (layer, index).
func (m *Map) ExpertsOn(node string) []ExpertID {
	var out []ExpertID
	for e, rs := range m.Placement {
		for _, r := range rs {
			if r.Node == node {
				out = append(out, e)
				break
			}
		}
	}
	slices.SortFunc(out, compareExperts)
	return out
}

// SessionsOn returns the IDs of the sessions homed on node, sorted.
func (m *Map) SessionsOn(node string) []string {
	var out []string
	for id, s := range m.Sessions.All() {
		if s.Home == node {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// serving reports whether a node may serve expert calls: it is known and
// active or draining (a draining node keeps serving until placement has
// moved its experts away).
func (m *Map) serving(node string) bool {
	n, ok := m.Nodes[node]
	return ok && (n.State == NodeActive || n.State == NodeDraining)
}

// PickReplica chooses the replica of e to call: prefer's replica if it is
// Ready, else the first Ready replica in list order. Replicas on nodes that
// are unknown or neither active nor draining are skipped. It returns false
// when no replica qualifies.
func (m *Map) PickReplica(e ExpertID, prefer string) (Replica, bool) {
	rs := m.Placement[e]
	if prefer != "" {
		for _, r := range rs {
			if r.Node == prefer && r.Ready && m.serving(r.Node) {
				return r, true
			}
		}
	}
	for _, r := range rs {
		if r.Ready && m.serving(r.Node) {
			return r, true
		}
	}
	return Replica{}, false
}

// ExpertLoads sums the nodes' latest load reports per expert (rows per
// second routed to it cluster-wide). Reports of nodes no longer serving
// (dead, or gone from the map) are ignored: their requests stopped with
// them. Experts nobody reported are absent.
func (m *Map) ExpertLoads() map[ExpertID]float64 {
	out := map[ExpertID]float64{}
	for id, l := range m.Loads {
		if !m.serving(id) {
			continue
		}
		for _, el := range l.Experts {
			out[el.Expert] += el.RowsPerSec
		}
	}
	return out
}

// ChooseHome returns the home node for a session. It is pure and
// deterministic, so every node computes the same answer from the same map:
// the session's recorded home if the session is in the map and its node is
// active, else the active node with the fewest sessions, ties broken by a
// rendezvous hash of sessionID and node ID. It returns false if no node is
// active.
//
// ChooseHome has no clock: a session still in the map counts as unexpired
// (OpExpireSessions, which carries the time, removes expired ones). Use
// ChooseHomeAt to also ignore sessions that have expired by a given time.
func ChooseHome(m *Map, sessionID string) (string, bool) {
	return chooseHome(m, sessionID, 0, "", nil, true)
}

// ChooseHomeAt is ChooseHome treating sessions with ExpiresMS <= nowMS as
// gone, both for the session's own home and for the per-node counts.
// nowMS <= 0 disables the expiry check.
func ChooseHomeAt(m *Map, sessionID string, nowMS int64) (string, bool) {
	return chooseHome(m, sessionID, nowMS, "", nil, true)
}

// chooseHome implements ChooseHome. exclude names a node that may not be
// chosen ("" for none); counts, when non-nil, holds the live session count
// of every candidate node and is used instead of counting the map.
// liveOnly leaves out nodes running another model than the live one
// (runsLive): proposers choose so (ChooseHome, and the homes written
// into assign_session), while the FSM's own choices (an assign without a
// home, move_sessions) do not, as replicas of builds before Node.Serving
// do not, so every replica applies the same log to the same map. A
// session the FSM sends to such a node is re-homed when that node refuses.
func chooseHome(m *Map, sessionID string, nowMS int64, exclude string, counts map[string]int, liveOnly bool) (string, bool) {
	live := func(s Session) bool { return nowMS <= 0 || s.ExpiresMS > nowMS }
	if s, ok := m.Sessions.Get(sessionID); ok && live(s) && s.Home != exclude {
		if n, ok := m.Nodes[s.Home]; ok && n.State == NodeActive && (!liveOnly || m.runsLive(n)) {
			return s.Home, true
		}
	}
	if counts == nil {
		counts = sessionCounts(m, nowMS, exclude, liveOnly)
	}
	best, bestCount, bestHash := "", 0, uint64(0)
	for id, c := range counts {
		h := rendezvous(sessionID, id)
		if best == "" || c < bestCount || (c == bestCount && (h > bestHash || (h == bestHash && id < best))) {
			best, bestCount, bestHash = id, c, h
		}
	}
	return best, best != ""
}

// sessionCounts returns, for each active node other than exclude (and,
// with liveOnly, running the live model), how many live sessions are homed
// on it.
func sessionCounts(m *Map, nowMS int64, exclude string, liveOnly bool) map[string]int {
	counts := map[string]int{}
	for id, n := range m.Nodes {
		if n.State == NodeActive && id != exclude && (!liveOnly || m.runsLive(n)) {
			counts[id] = 0
		}
	}
	m.Sessions.countLive(nowMS, counts)
	return counts
}

// runsLive reports whether n can serve the live model: it runs it, or none
// yet (it will fetch the live one), or the map has no model. A node running
// another model hosts none of the live model's experts and is chosen as no
// session's home: it refuses to generate.
func (m *Map) runsLive(n Node) bool {
	return m.Model == nil || n.Serving == "" || n.Serving == m.Model.Digest
}

// rendezvous is the highest-random-weight score of (session, node).
func rendezvous(sessionID, nodeID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(sessionID))
	h.Write([]byte{0})
	h.Write([]byte(nodeID))
	x := h.Sum64()
	// splitmix64 finaliser: FNV's low-entropy high bits otherwise favour
	// nodes whose IDs differ only at the end.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ErrBadPlacement reports a placement that names an expert twice, a
// replica without a node, or two replicas of an expert on one node.
var ErrBadPlacement = errors.New("router: bad placement")
