package router

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// versionMap is a map with a live 2×4 model and expert (1,2) on nodes a and b,
// both ready on the base version.
func versionMap(t *testing.T) *Map {
	t.Helper()
	m := NewMap()
	e := ExpertID{Layer: 1, Index: 2}
	for _, c := range []Command{
		{Op: OpUpsertNode, Node: &Node{ID: "a", State: NodeActive}},
		{Op: OpUpsertNode, Node: &Node{ID: "b", State: NodeActive}},
		{Op: OpSetModel, Model: &Model{ID: "m", Digest: strings.Repeat("0", 64), Layers: 2, Experts: 4, TopK: 2, Live: true}},
		{Op: OpSetPlacement, Placement: []PlacementEntry{{Expert: e, Replicas: []Replica{{Node: "a", Ready: true}, {Node: "b", Ready: true}}}}},
	} {
		m = apply(t, m, c)
	}
	return m
}

func apply(t *testing.T, m *Map, c Command) *Map {
	t.Helper()
	c.V = CommandVersion
	next, _, err := m.Apply(c)
	if err != nil {
		t.Fatalf("%s: %v", c.Op, err)
	}
	return next
}

func flags(m *Map, e ExpertID) (ready, staged string) {
	for _, r := range m.Placement[e] {
		b := func(v bool) string {
			if v {
				return r.Node
			}
			return "-"
		}
		ready += b(r.Ready)
		staged += b(r.Staged)
	}
	return ready, staged
}

func TestExpertUpdateAndRollback(t *testing.T) {
	e := ExpertID{Layer: 1, Index: 2}
	v2 := strings.Repeat("ab", 32)
	m := versionMap(t)
	if got := m.WantedVersions(e); len(got) != 1 || got[0] != BaseVersion {
		t.Fatalf("wanted before update = %q", got)
	}

	m = apply(t, m, Command{Op: OpStageExpert, Expert: &e, Version: v2, NodeID: "a"})
	if got := m.WantedVersions(e); len(got) != 2 || got[1] != v2 {
		t.Fatalf("wanted while staging = %q", got)
	}
	// A flip before any replica loaded the version is refused.
	if _, _, err := m.Apply(Command{V: CommandVersion, Op: OpFlipExpert, Expert: &e, Version: v2}); !errors.Is(err, ErrNotStaged) {
		t.Fatalf("early flip: %v, want ErrNotStaged", err)
	}
	m = apply(t, m, Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "a", Ready: true, Version: v2})
	if r, s := flags(m, e); r != "ab" || s != "a-" {
		t.Fatalf("after a staged: ready %s staged %s", r, s)
	}
	m = apply(t, m, Command{Op: OpFlipExpert, Expert: &e, Version: v2})
	v := m.ExpertVersions[e]
	if v.Live != v2 || !v.HasPrev || v.Prev != BaseVersion || v.Staging || v.Updates != 1 || v.RolledBack {
		t.Fatalf("after flip: %+v", v)
	}
	// b had not loaded v2: it stops serving until it reports v2 loaded.
	if r, s := flags(m, e); r != "a-" || s != "--" {
		t.Fatalf("after flip: ready %s staged %s", r, s)
	}
	if _, ok := m.PickReplica(e, "b"); !ok {
		t.Fatal("no replica after flip")
	}
	// A late report for the base version is stale now.
	if _, _, err := m.Apply(Command{V: CommandVersion, Op: OpSetReplicaReady, Expert: &e, NodeID: "b", Ready: true}); !errors.Is(err, ErrStaleVersion) {
		t.Fatalf("stale report: %v, want ErrStaleVersion", err)
	}
	m = apply(t, m, Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "b", Ready: true, Version: v2})
	if r, _ := flags(m, e); r != "ab" {
		t.Fatalf("b's report: ready %s", r)
	}
	if got := m.WantedVersions(e); len(got) != 2 || got[0] != v2 || got[1] != BaseVersion {
		t.Fatalf("wanted after flip = %q (live and prev)", got)
	}

	// Rollback: stage the previous version and flip to it.
	m = apply(t, m, Command{Op: OpStageExpert, Expert: &e, Version: BaseVersion})
	for _, n := range []string{"a", "b"} {
		m = apply(t, m, Command{Op: OpSetReplicaReady, Expert: &e, NodeID: n, Ready: true, Version: BaseVersion})
	}
	m = apply(t, m, Command{Op: OpFlipExpert, Expert: &e, Version: BaseVersion, Rollback: true})
	v = m.ExpertVersions[e]
	if v.Live != BaseVersion || v.Prev != v2 || v.Updates != 2 || v.Source != "a" || !v.RolledBack {
		t.Fatalf("after rollback: %+v", v)
	}
	if r, s := flags(m, e); r != "ab" || s != "--" {
		t.Fatalf("after rollback: ready %s staged %s", r, s)
	}
	// Flipping again to what is live changes nothing.
	if _, changed, err := m.Apply(Command{V: CommandVersion, Op: OpFlipExpert, Expert: &e, Version: BaseVersion}); err != nil || changed {
		t.Fatalf("repeat flip: changed %v err %v", changed, err)
	}

	// The state survives the map's JSON form (snapshots).
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Map
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Equal(m) || back.ExpertVersions[e] != v {
		t.Fatalf("round trip lost the versions: %s", b)
	}
	// A new model forgets the old one's expert versions.
	m = apply(t, m, Command{Op: OpSetModel, Model: &Model{ID: "m2", Digest: strings.Repeat("1", 64), Layers: 2, Experts: 4, Live: true}})
	if len(m.ExpertVersions) != 0 || m.LiveVersion(e) != BaseVersion {
		t.Fatalf("new model kept versions: %v", m.ExpertVersions)
	}
}

func TestStageLiveVersionCancels(t *testing.T) {
	e := ExpertID{Layer: 1, Index: 2}
	v2 := strings.Repeat("cd", 32)
	m := versionMap(t)
	m = apply(t, m, Command{Op: OpStageExpert, Expert: &e, Version: v2, NodeID: "b"})
	m = apply(t, m, Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "b", Ready: true, Version: v2})
	m = apply(t, m, Command{Op: OpStageExpert, Expert: &e, Version: BaseVersion})
	if v, ok := m.ExpertVersions[e]; ok && v.Staging {
		t.Fatalf("still staging: %+v", v)
	}
	if r, s := flags(m, e); r != "ab" || s != "--" {
		t.Fatalf("after cancel: ready %s staged %s", r, s)
	}
	if _, _, err := m.Apply(Command{V: CommandVersion, Op: OpFlipExpert, Expert: &e, Version: v2}); !errors.Is(err, ErrNotStaged) {
		t.Fatalf("flip after cancel: %v, want ErrNotStaged", err)
	}
}

// TestUnstage: a give-up cancels exactly the staging of its version: not
// another one staged since, and nothing once that version was flipped live.
func TestUnstage(t *testing.T) {
	e := ExpertID{Layer: 1, Index: 2}
	v2, v3 := strings.Repeat("cd", 32), strings.Repeat("ef", 32)
	m := versionMap(t)
	m = apply(t, m, Command{Op: OpStageExpert, Expert: &e, Version: v2, NodeID: "b"})
	m = apply(t, m, Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "b", Ready: true, Version: v2})
	if next, changed, err := m.Apply(Command{V: CommandVersion, Op: OpStageExpert, Expert: &e, Version: v3, Unstage: true}); err != nil || changed || next != m {
		t.Fatalf("unstaging a version not staged: changed %v, %v", changed, err)
	}
	m = apply(t, m, Command{Op: OpStageExpert, Expert: &e, Version: v2, Unstage: true})
	if v := m.ExpertVersions[e]; v.Staging || v.Live != BaseVersion {
		t.Fatalf("after unstage: %+v", v)
	}
	if r, s := flags(m, e); r != "ab" || s != "--" {
		t.Fatalf("after unstage: ready %s staged %s", r, s)
	}
	// Staged, flipped live: a late give-up changes nothing.
	m = apply(t, m, Command{Op: OpStageExpert, Expert: &e, Version: v2, NodeID: "b"})
	m = apply(t, m, Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "a", Ready: true, Version: v2})
	m = apply(t, m, Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "b", Ready: true, Version: v2})
	m = apply(t, m, Command{Op: OpFlipExpert, Expert: &e, Version: v2})
	if _, changed, err := m.Apply(Command{V: CommandVersion, Op: OpStageExpert, Expert: &e, Version: v2, Unstage: true}); err != nil || changed {
		t.Fatalf("unstaging a version flipped live: changed %v, %v", changed, err)
	}
	if v := m.ExpertVersions[e]; v.Live != v2 || v.Staging {
		t.Fatalf("after the flip: %+v", v)
	}
}

func TestExpertVersionCommandsValidate(t *testing.T) {
	e := ExpertID{Layer: 1, Index: 2}
	out := ExpertID{Layer: 5, Index: 0}
	m := versionMap(t)
	for name, c := range map[string]Command{
		"short version":   {Op: OpStageExpert, Expert: &e, Version: "abc"},
		"upper hex":       {Op: OpStageExpert, Expert: &e, Version: strings.Repeat("AB", 32)},
		"no expert":       {Op: OpFlipExpert, Version: strings.Repeat("ab", 32)},
		"outside model":   {Op: OpStageExpert, Expert: &out, Version: strings.Repeat("ab", 32)},
		"unknown source":  {Op: OpStageExpert, Expert: &e, Version: strings.Repeat("ab", 32), NodeID: "zz"},
		"bad ready":       {Op: OpSetReplicaReady, Expert: &e, NodeID: "a", Version: "x"},
		"flip not staged": {Op: OpFlipExpert, Expert: &e, Version: strings.Repeat("ab", 32)},
	} {
		t.Run(name, func(t *testing.T) {
			c.V = CommandVersion
			if _, changed, err := m.Apply(c); err == nil || changed {
				t.Fatalf("accepted (changed %v)", changed)
			}
		})
	}
}

// TestStalePlacementAfterSetModel: a set_placement computed (by the
// leader's Place) from a map before a set_model that switched the model
// file commits after it; it must not mark the old file's replicas Ready
// for the new file.
func TestStalePlacementAfterSetModel(t *testing.T) {
	f := NewFSM()
	e := ExpertID{0, 0}
	mustApply(t, f,
		Command{Op: OpUpsertNode, Node: node("a", NodeActive)},
		Command{Op: OpUpsertNode, Node: node("b", NodeActive)},
		Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 1, Digest: "d1", Layers: 1, Experts: 1, ExpertBytes: 100, Live: true}},
		Command{Op: OpSetPlacement, Placement: []PlacementEntry{{Expert: e, Replicas: []Replica{{Node: "a", Device: "cpu"}}}}},
		Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "a", Ready: true},
		Command{Op: OpSetReplication, Replication: 2},
	)
	// The leader places from the map it has now (b gets a replica)...
	res, err := Place(f.Map().PlaceInput(nil))
	if err != nil {
		t.Fatal(err)
	}
	// ...meanwhile an SRE loads a new model file: nothing is ready for it.
	mustApply(t, f, Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 2, Digest: "d2", Layers: 1, Experts: 1, ExpertBytes: 100, Live: true}})
	if r, _ := f.Map().PickReplica(e, ""); r.Ready {
		t.Fatal("precondition")
	}
	// The placement commits after the set_model.
	mustApply(t, f, Command{Op: OpSetPlacement, Placement: PlacementEntries(res.Placement)})
	if r, ok := f.Map().PickReplica(e, ""); ok {
		t.Errorf("replica %+v is Ready for model d2, but node a never reported d2 loaded", r)
	}
}

// TestStalePlacementAfterFlip: the same with a hot expert flip: a replica
// that had not staged the new version must not be marked Ready for it by a
// placement computed before the flip.
func TestStalePlacementAfterFlip(t *testing.T) {
	f := NewFSM()
	e := ExpertID{0, 0}
	v := strings.Repeat("a", 64)
	mustApply(t, f,
		Command{Op: OpUpsertNode, Node: node("a", NodeActive)},
		Command{Op: OpUpsertNode, Node: node("b", NodeActive)},
		Command{Op: OpSetModel, Model: &Model{ID: "m", Version: 1, Digest: "d1", Layers: 1, Experts: 1, ExpertBytes: 100, Live: true}},
		Command{Op: OpSetReplication, Replication: 2},
		Command{Op: OpSetPlacement, Placement: []PlacementEntry{{Expert: e, Replicas: []Replica{{Node: "a", Device: "cpu", Ready: true}, {Node: "b", Device: "cpu"}}}}},
		Command{Op: OpStageExpert, Expert: &e, Version: v, NodeID: "a"},
		Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "a", Ready: true, Version: v},
	)
	mustApply(t, f, Command{Op: OpSetReplicaReady, Expert: &e, NodeID: "b", Ready: true}) // b finished loading the base version
	res, _ := Place(f.Map().PlaceInput(nil))                                              // leader reads map: b Ready (base)
	mustApply(t, f, Command{Op: OpFlipExpert, Expert: &e, Version: v})                    // a flip commits: b (not staged) not Ready
	mustApply(t, f, Command{Op: OpSetPlacement, Placement: PlacementEntries(res.Placement)})
	for _, r := range f.Map().Placement[e] {
		if r.Node == "b" && r.Ready {
			t.Errorf("b is Ready for live version %.8s but only ever loaded the base version: %+v", v, f.Map().Placement[e])
		}
	}
}

// TestDrainLastActiveRefused: OpSetNodeState with OthersActive refuses to
// leave no node active, and is a version-2 command.
func TestDrainLastActiveRefused(t *testing.T) {
	m := versionMap(t) // a and b active
	drain := func(id string) Command {
		return Command{V: CommandVersion, Op: OpSetNodeState, NodeID: id, State: NodeDraining, OthersActive: true}
	}
	m = apply(t, m, drain("a"))
	if _, _, err := m.Apply(drain("b")); !errors.Is(err, ErrNoActiveNode) {
		t.Fatalf("draining the last active node: %v, want ErrNoActiveNode", err)
	}
	if c := drain("b"); c.MinVersion() != 2 {
		t.Errorf("MinVersion %d, want 2", c.MinVersion())
	}
	// Without the condition (the autopilot marking a node dead, say) it applies.
	if _, changed, err := m.Apply(Command{V: 1, Op: OpSetNodeState, NodeID: "b", State: NodeDead}); err != nil || !changed {
		t.Errorf("unconditional state change: %v %v", changed, err)
	}
}
