package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// CommandVersion is the newest command encoding this package applies. A
// change in the meaning of any command bumps it; an FSM rejects versions it
// does not know rather than guess, so a mixed-version cluster fails loudly
// instead of diverging. A command is written with the lowest version that
// carries its meaning (MinVersion), so one that means what it meant before
// still applies on older replicas.
//
//	1: the original commands
//	2: OpSetModel's IfNoModel, OpStageExpert's Unstage, OpSetNodeState's OthersActive
const CommandVersion = 2

// MinVersion is the lowest command version that carries c's meaning: 2 when
// it uses a field version 1 FSMs would ignore (and so apply differently).
func (c Command) MinVersion() int {
	if c.IfNoModel || c.Unstage || c.OthersActive {
		return 2
	}
	return 1
}

// Op names a cluster-map command.
type Op string

const (
	OpUpsertNode      Op = "upsert_node"       // Node: add or replace a node record; State "" keeps the current state (joining for a new node)
	OpSetNodeState    Op = "set_node_state"    // NodeID, State (NowMS stamps UpdatedMS)
	OpRemoveNode      Op = "remove_node"       // NodeID: forget the node and drop its replicas; its sessions stay until moved or expired
	OpSetModel        Op = "set_model"         // Model: add or update a version (keyed by ID and Version); Live=true makes it Model
	OpSetReplication  Op = "set_replication"   // Replication >= 1
	OpSetPlacement    Op = "set_placement"     // Placement: full replace; every replica's node must be known
	OpSetReplicaReady Op = "set_replica_ready" // Expert, NodeID, Ready, Version (live: Ready flag; staged: Staged flag)
	OpAssignSession   Op = "assign_session"    // Session: record it; Home "" lets ChooseHome pick (deterministically, in Apply)
	OpTouchSession    Op = "touch_session"     // SessionID, NowMS: last use = NowMS, expiry moved by the same TTL (or Session.ExpiresMS if given)
	OpDeleteSession   Op = "delete_session"    // SessionID
	OpExpireSessions  Op = "expire_sessions"   // NowMS: remove sessions with ExpiresMS <= NowMS
	OpMoveSessions    Op = "move_sessions"     // NodeID: rehome its sessions with ChooseHome over the other active nodes
	OpReportLoad      Op = "report_load"       // NodeID, Load (NowMS stamps it): replace the node's load report; zero rates are dropped
	OpStageExpert     Op = "stage_expert"      // Expert, Version, NodeID (the node holding its expert file): hosts load Version beside the live one
	OpFlipExpert      Op = "flip_expert"       // Expert, Version (must be staged on a replica): Version serves; the old live one becomes Prev
)

// MaxLoadEntries bounds the entries of one OpReportLoad (Place's own bound
// on Layers*Experts).
const MaxLoadEntries = maxPlaceExperts

var knownOps = map[Op]bool{
	OpUpsertNode: true, OpSetNodeState: true, OpRemoveNode: true, OpSetModel: true,
	OpSetReplication: true, OpSetPlacement: true, OpSetReplicaReady: true,
	OpAssignSession: true, OpTouchSession: true, OpDeleteSession: true,
	OpExpireSessions: true, OpMoveSessions: true, OpReportLoad: true,
	OpStageExpert: true, OpFlipExpert: true,
}

// Command is one change to the cluster map, the payload of a Raft log entry.
// Which fields matter depends on Op (see the Op constants). Time is carried
// in NowMS so that Apply stays deterministic: the FSM never reads the clock.
type Command struct {
	V  int `json:"v"`
	Op Op  `json:"op"`

	Node   *Node     `json:"node,omitempty"`
	NodeID string    `json:"node_id,omitempty"`
	State  NodeState `json:"state,omitempty"`
	// OthersActive (OpSetNodeState): refuse, with ErrNoActiveNode, a change
	// that would leave no other node active (a drain of the last one).
	OthersActive bool `json:"others_active,omitempty"`

	Model       *Model `json:"model,omitempty"`
	IfNoModel   bool   `json:"if_no_model,omitempty"` // OpSetModel: only when the map has no live model (a node announcing its file)
	Replication int    `json:"replication,omitempty"`

	Placement []PlacementEntry `json:"placement,omitempty"`
	Expert    *ExpertID        `json:"expert,omitempty"`
	Ready     bool             `json:"ready,omitempty"`
	Version   string           `json:"version,omitempty"`  // expert version (OpSetReplicaReady, OpStageExpert, OpFlipExpert); "" is BaseVersion
	Rollback  bool             `json:"rollback,omitempty"` // OpFlipExpert: the flip rolls back (ExpertVersion.RolledBack)
	Unstage   bool             `json:"unstage,omitempty"`  // OpStageExpert: cancel the staging of Version if it is the one staged, else nothing

	Session   *Session `json:"session,omitempty"`
	SessionID string   `json:"session_id,omitempty"`

	Load []ExpertLoad `json:"load,omitempty"` // OpReportLoad: per-expert rates

	NowMS int64 `json:"now_ms,omitempty"` // unix milliseconds, stamped by the proposer
}

// Errors. Apply returns them wrapped; test with errors.Is.
var (
	ErrBadCommand         = errors.New("router: bad command")                 // malformed, or a field the op needs is missing or out of range
	ErrUnsupportedVersion = errors.New("router: unsupported command version") // also wraps ErrBadCommand
	ErrUnknownOp          = errors.New("router: unknown op")                  // also wraps ErrBadCommand
	ErrUnknownNode        = errors.New("router: unknown node")
	ErrUnknownSession     = errors.New("router: unknown session")
	ErrUnknownReplica     = errors.New("router: no such replica")
	ErrNoActiveNode       = errors.New("router: no active node")
	ErrBadSnapshot        = errors.New("router: bad snapshot")
)

// Encode returns the command's wire form. A zero V is written as
// MinVersion.
func (c Command) Encode() ([]byte, error) {
	if c.V == 0 {
		c.V = c.MinVersion()
	}
	return json.Marshal(c)
}

// DecodeCommand parses and validates a command's wire form.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if err := c.Validate(); err != nil {
		return Command{}, err
	}
	return c, nil
}

// Validate checks what can be checked without the map: the version, the op
// and the fields the op needs. Checks against the map (unknown node, …)
// happen in Map.Apply.
func (c Command) Validate() error {
	if c.V < 1 || c.V > CommandVersion {
		return fmt.Errorf("%w: %w %d", ErrBadCommand, ErrUnsupportedVersion, c.V)
	}
	if c.V < c.MinVersion() {
		return fmt.Errorf("%w: version %d cannot carry this command's fields (it needs %d)", ErrBadCommand, c.V, c.MinVersion())
	}
	if !knownOps[c.Op] {
		return fmt.Errorf("%w: %w %q", ErrBadCommand, ErrUnknownOp, c.Op)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadCommand, c.Op, fmt.Sprintf(format, args...))
	}
	switch c.Op {
	case OpUpsertNode:
		if c.Node == nil || c.Node.ID == "" {
			return bad("node with an id required")
		}
		if c.Node.State != "" && !validState(c.Node.State) {
			return bad("unknown state %q", c.Node.State)
		}
	case OpSetNodeState:
		if c.NodeID == "" {
			return bad("node_id required")
		}
		if !validState(c.State) {
			return bad("unknown state %q", c.State)
		}
	case OpRemoveNode, OpMoveSessions:
		if c.NodeID == "" {
			return bad("node_id required")
		}
	case OpSetModel:
		m := c.Model
		if m == nil || m.ID == "" {
			return bad("model with an id required")
		}
		if m.Layers < 0 || m.Experts < 0 || m.TopK < 0 || m.ExpertBytes < 0 {
			return bad("negative model dimension")
		}
	case OpSetReplication:
		if c.Replication < 1 {
			return bad("replication %d < 1", c.Replication)
		}
	case OpSetPlacement:
		if _, err := placementFromEntries(c.Placement); err != nil {
			return fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
	case OpSetReplicaReady:
		if c.Expert == nil || c.NodeID == "" {
			return bad("expert and node_id required")
		}
		if !validVersion(c.Version) {
			return bad("version %q is not a sha256 hex digest", c.Version)
		}
	case OpStageExpert, OpFlipExpert:
		if c.Expert == nil || c.Expert.Layer < 0 || c.Expert.Index < 0 {
			return bad("expert required")
		}
		if !validVersion(c.Version) {
			return bad("version %q is not a sha256 hex digest", c.Version)
		}
	case OpAssignSession:
		if c.Session == nil || c.Session.ID == "" {
			return bad("session with an id required")
		}
		if len(c.Session.Owner) > maxOwner {
			return bad("session owner over %d bytes", maxOwner)
		}
	case OpTouchSession:
		if c.sessionID() == "" || c.NowMS <= 0 {
			return bad("session_id and now_ms required")
		}
	case OpDeleteSession:
		if c.sessionID() == "" {
			return bad("session_id required")
		}
	case OpExpireSessions:
		if c.NowMS <= 0 {
			return bad("now_ms required")
		}
	case OpReportLoad:
		if c.NodeID == "" {
			return bad("node_id required")
		}
		if len(c.Load) > MaxLoadEntries {
			return bad("%d load entries > %d", len(c.Load), MaxLoadEntries)
		}
		seen := make(map[ExpertID]bool, len(c.Load))
		for _, l := range c.Load {
			if l.Expert.Layer < 0 || l.Expert.Index < 0 {
				return bad("negative expert %v", l.Expert)
			}
			if !(l.RowsPerSec >= 0) || math.IsInf(l.RowsPerSec, 1) {
				return bad("rate %v of expert %v", l.RowsPerSec, l.Expert)
			}
			if seen[l.Expert] {
				return bad("expert %v listed twice", l.Expert)
			}
			seen[l.Expert] = true
		}
	}
	return nil
}

// maxOwner bounds Session.Owner (a client's name, not its key).
const maxOwner = 256

// sessionID is SessionID, or Session.ID when SessionID is empty.
func (c Command) sessionID() string {
	if c.SessionID == "" && c.Session != nil {
		return c.Session.ID
	}
	return c.SessionID
}

// validVersion reports whether v is BaseVersion or 64 lowercase hex digits.
func validVersion(v string) bool {
	if v == BaseVersion {
		return true
	}
	if len(v) != 64 {
		return false
	}
	for _, r := range v {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

func validState(s NodeState) bool {
	switch s {
	case NodeJoining, NodeActive, NodeDraining, NodeDead:
		return true
	}
	return false
}
