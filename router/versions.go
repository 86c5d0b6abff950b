package router

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Hot expert updates. An expert's weights may be replaced, one expert at a
// time, by a version loaded from an expert file (see model.ExpertFile); the
// map records, per expert, which version serves and which one is loading:
//
//	stage_expert  Staged = V, Staging: every replica's host loads V beside
//	              the live version and reports it (set_replica_ready with
//	              Version V), which sets the replica's Staged flag
//	flip_expert   Live = V, Prev = the old live version; each replica is
//	              Ready exactly when it had V staged (the others load V and
//	              report it before serving again)
//
// A rollback is the same two steps back to Prev. Hosts keep Prev loaded, so
// a rollback stages at once. The dispatcher calls the actor of the live
// version (expert actor names carry the version), so a flip takes effect on
// each node's next dispatch without a pause; requests already queued on the
// old version's actors finish on it.

// BaseVersion names the weights of the model file itself.
const BaseVersion = ""

// ExpertVersion is the version state of one expert. Versions are the hex
// sha256 digests of expert files; BaseVersion ("") is the model file's own
// weights.
type ExpertVersion struct {
	Live    string `json:"live,omitempty"` // the version that serves
	Prev    string `json:"prev,omitempty"` // what a rollback returns to (when HasPrev)
	HasPrev bool   `json:"has_prev,omitempty"`
	Staged  string `json:"staged,omitempty"`  // the version loading beside Live (when Staging)
	Staging bool   `json:"staging,omitempty"` //
	Source  string `json:"source,omitempty"`  // node that holds the expert files of the versions
	Updates int    `json:"updates,omitempty"` // flips so far
	// RolledBack: the last flip was a rollback (its command said so), so a
	// second rollback would go forward again; the admin API refuses it.
	RolledBack bool `json:"rolled_back,omitempty"`
}

// ExpertVersionEntry is one expert's version state, the JSON form of
// Map.ExpertVersions.
type ExpertVersionEntry struct {
	Expert ExpertID      `json:"expert"`
	State  ExpertVersion `json:"state"`
}

// ErrStaleVersion: a readiness report named a version of an expert that is
// neither live nor staged (the map moved on since the reporter looked).
var ErrStaleVersion = errors.New("router: stale expert version")

// ErrNotStaged: a flip named a version that is not staged on any replica.
var ErrNotStaged = errors.New("router: version not staged")

// LiveVersion returns the version of e that serves (BaseVersion unless e
// was updated).
func (m *Map) LiveVersion(e ExpertID) string { return m.ExpertVersions[e].Live }

// WantedVersions lists the versions of e a host of one of its replicas
// keeps loaded: the live one, the staged one and the previous one (for an
// instant rollback), without duplicates.
func (m *Map) WantedVersions(e ExpertID) []string {
	v := m.ExpertVersions[e]
	out := []string{v.Live}
	if v.Staging && !slices.Contains(out, v.Staged) {
		out = append(out, v.Staged)
	}
	if v.HasPrev && !slices.Contains(out, v.Prev) {
		out = append(out, v.Prev)
	}
	return out
}

// ExpertVersionList returns the non-trivial version states sorted by expert.
func (m *Map) ExpertVersionList() []ExpertVersionEntry {
	out := make([]ExpertVersionEntry, 0, len(m.ExpertVersions))
	for e, v := range m.ExpertVersions {
		out = append(out, ExpertVersionEntry{Expert: e, State: v})
	}
	slices.SortFunc(out, func(a, b ExpertVersionEntry) int { return compareExperts(a.Expert, b.Expert) })
	return out
}

func versionsFromEntries(list []ExpertVersionEntry) (map[ExpertID]ExpertVersion, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := make(map[ExpertID]ExpertVersion, len(list))
	for _, ve := range list {
		if ve.Expert.Layer < 0 || ve.Expert.Index < 0 {
			return nil, fmt.Errorf("%w: negative expert %v", ErrBadSnapshot, ve.Expert)
		}
		if _, dup := out[ve.Expert]; dup {
			return nil, fmt.Errorf("%w: expert %v has two version states", ErrBadSnapshot, ve.Expert)
		}
		out[ve.Expert] = ve.State
	}
	return out, nil
}

// checkExpert checks that e is an expert of the live model.
func (m *Map) checkExpert(e ExpertID) error {
	mod := m.Model
	if mod == nil {
		return fmt.Errorf("%w: no live model", ErrBadCommand)
	}
	if e.Layer >= mod.Layers || e.Index >= mod.Experts {
		return fmt.Errorf("%w: expert %v not in a model of %d layers × %d experts", ErrBadCommand, e, mod.Layers, mod.Experts)
	}
	return nil
}

func (m *Map) setVersion(e ExpertID, v ExpertVersion) {
	m.ExpertVersions = maps.Clone(m.ExpertVersions)
	if m.ExpertVersions == nil {
		m.ExpertVersions = map[ExpertID]ExpertVersion{}
	}
	if v == (ExpertVersion{}) {
		delete(m.ExpertVersions, e)
		return
	}
	m.ExpertVersions[e] = v
}

// stageExpert implements OpStageExpert.
func (m *Map) stageExpert(c Command) (bool, error) {
	e := *c.Expert
	if err := m.checkExpert(e); err != nil {
		return false, err
	}
	if c.NodeID != "" {
		if _, ok := m.Nodes[c.NodeID]; !ok {
			return false, fmt.Errorf("%w %q (source of %v)", ErrUnknownNode, c.NodeID, e)
		}
	}
	v := m.ExpertVersions[e]
	if c.Unstage {
		// A give-up: exactly this staging, whatever the proposer's map
		// said is live (a flip of it may have committed meanwhile).
		if !v.Staging || v.Staged != c.Version {
			return false, nil
		}
		v.Staged, v.Staging = "", false
		m.setVersion(e, v)
		m.setStaged(e, func(Replica) bool { return false })
		return true, nil
	}
	if v.Live == c.Version {
		if !v.Staging {
			return false, nil // already live
		}
		v.Staged, v.Staging = "", false // staging the live version cancels
		m.setVersion(e, v)
		m.setStaged(e, func(Replica) bool { return false })
		return true, nil
	}
	if v.Staging && v.Staged == c.Version && (c.NodeID == "" || v.Source == c.NodeID) {
		return false, nil
	}
	v.Staged, v.Staging = c.Version, true
	if c.NodeID != "" {
		v.Source = c.NodeID
	}
	m.setVersion(e, v)
	m.setStaged(e, func(Replica) bool { return false })
	return true, nil
}

// flipExpert implements OpFlipExpert.
func (m *Map) flipExpert(c Command) (bool, error) {
	e := *c.Expert
	v := m.ExpertVersions[e]
	if !v.Staging || v.Staged != c.Version {
		if v.Live == c.Version && !v.Staging {
			return false, nil // flipped already
		}
		return false, fmt.Errorf("%w: expert %v version %q", ErrNotStaged, e, short(c.Version))
	}
	if !slices.ContainsFunc(m.Placement[e], func(r Replica) bool { return r.Staged }) {
		return false, fmt.Errorf("%w: expert %v version %q is loaded on no replica", ErrNotStaged, e, short(c.Version))
	}
	v.RolledBack = c.Rollback
	v.Prev, v.HasPrev = v.Live, true
	v.Live, v.Staged, v.Staging = c.Version, "", false
	v.Updates++
	if v.Live == BaseVersion && v.Prev == BaseVersion {
		v.HasPrev = false
	}
	m.setVersion(e, v)
	rs := slices.Clone(m.Placement[e])
	for i := range rs {
		rs[i].Ready, rs[i].Staged = rs[i].Staged, false
	}
	m.Placement = maps.Clone(m.Placement)
	m.Placement[e] = rs
	return true, nil
}

// setReplicaVersionReady implements OpSetReplicaReady: a report for the
// live version sets the replica's Ready flag, one for the staged version its
// Staged flag; a report for any other version is stale (ErrStaleVersion).
func (m *Map) setReplicaReady(c Command) (bool, error) {
	e := *c.Expert
	rs := m.Placement[e]
	i := slices.IndexFunc(rs, func(r Replica) bool { return r.Node == c.NodeID })
	if i < 0 {
		return false, fmt.Errorf("%w: expert %v on node %q", ErrUnknownReplica, e, c.NodeID)
	}
	v := m.ExpertVersions[e]
	flag := func(r *Replica) *bool { return &r.Ready }
	switch {
	case c.Version == v.Live:
	case v.Staging && c.Version == v.Staged:
		flag = func(r *Replica) *bool { return &r.Staged }
	default:
		return false, fmt.Errorf("%w: expert %v version %q (live %q)", ErrStaleVersion, e, short(c.Version), short(v.Live))
	}
	if *flag(&rs[i]) == c.Ready {
		return false, nil
	}
	rs = slices.Clone(rs)
	*flag(&rs[i]) = c.Ready
	m.Placement = maps.Clone(m.Placement)
	m.Placement[e] = rs
	return true, nil
}

// setStaged sets every replica of e's Staged flag to f(replica).
func (m *Map) setStaged(e ExpertID, f func(Replica) bool) {
	rs := m.Placement[e]
	if len(rs) == 0 {
		return
	}
	rs = slices.Clone(rs)
	for i := range rs {
		rs[i].Staged = f(rs[i])
	}
	m.Placement = maps.Clone(m.Placement)
	m.Placement[e] = rs
}

func short(v string) string {
	if v == BaseVersion {
		return "base"
	}
	if len(v) > 12 {
		return v[:12]
	}
	return v
}
