package cluster

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/go-hclog"
)

// Config configures one node. Build it with DefaultConfig, set the identity,
// addresses and data directory, and call Validate (Start does).
type Config struct {
	// ID is the node's unique name in the cluster: memberlist node name, Raft
	// server ID and map key. Letters, digits, '.', '_' and '-' only.
	ID string
	// DataDir holds the Raft log and stable store (raft.db), snapshots
	// (snapshots/) and the last known gossip peers (peers.json). Created if
	// missing.
	DataDir string

	// HTTPAddr is the HOST:PORT the admin (and later OpenAI) HTTP API listens on.
	HTTPAddr string
	// Routes, when set, adds the caller's routes to the node's HTTP mux
	// (Node.Mux) before the listener opens, so they answer from the first
	// request (the OpenAI API's, answering "starting" until it is ready).
	Routes func(mux *http.ServeMux)
	// NotFound, when set, answers the requests no route of the node's mux
	// matches (net/http's text 404 otherwise); a path whose route wants
	// another method gets a JSON 405 with Allow, and an unclean path the
	// mux's redirect.
	NotFound http.Handler
	// GossipAddr is the HOST:PORT memberlist binds (TCP and UDP) and advertises.
	GossipAddr string
	// RaftAddr is the HOST:PORT of the Raft transport.
	RaftAddr string
	// ActorAddr is the HOST:PORT of the protoactor remote (gRPC) server.
	ActorAddr string
	// Addresses must name a concrete host: the same string is bound and
	// advertised to peers, so 0.0.0.0 is rejected.

	// Join lists gossip addresses (HOST:PORT) of existing members. Empty for
	// the first node.
	Join []string
	// Bootstrap forces bootstrapping a new single-voter Raft cluster even
	// when Join is set. Without it a node bootstraps only when its data dir
	// holds no Raft state and Join is empty.
	Bootstrap bool
	// RaftRecover, when set, replaces the Raft configuration this node's
	// data dir holds with these voters before Raft starts (raft's
	// RecoverCluster), keeping the map. For an emergency only: a cluster
	// that can no longer elect a leader because the voters its log names
	// are gone (such as a cluster stopped one node at a time, whose last
	// leader is lost: every leave removed a voter). Every node listed must
	// start with the same list, this one among them; then they elect a
	// leader among themselves. Never on a node of a cluster that has a
	// leader: it would get a configuration of its own. A list applied
	// once (recorded in DataDir/raft-recovered) is ignored while this node
	// is still a voter, so a restart that keeps the flag is harmless.
	RaftRecover []RaftPeer

	// ModelPath is an optional GGUF file this node can load. The first node
	// with a model sets it as the cluster's model when the map has none.
	ModelPath string
	// Devices are the node's compute devices with memory in bytes. Empty
	// means one "cpu" device sized from /proc/meminfo.
	Devices []router.Device
	// CapacityBytes is how many bytes of expert weights this node may host;
	// 0 means: derived from MemoryLimitBytes when that is set, else the sum
	// of the devices' free bytes. Set at most one of the two.
	CapacityBytes int64
	// MemoryLimitBytes bounds the node's resident memory (for example its
	// cgroup's memory.max). Start derives the expert capacity it gossips
	// from it: MemoryLimitBytes − the dense (non-expert) weight bytes of
	// ModelPath − ServingBytes − RuntimeReserveBytes, and fails with
	// ErrMemoryLimit when that is ≤ 0. 0 means no limit.
	MemoryLimitBytes int64
	// ServingBytes is memory the node's engine reserves outside the model
	// file, counted against MemoryLimitBytes: the KV cache pool and the
	// buffers of a full step (engine.Config.StepBytes), which the engine's
	// warm-up fills at start.
	ServingBytes int64
	// RuntimeReserveBytes is what MemoryLimitBytes sets aside for the
	// process itself: Go runtime and heap, the binary's text, network
	// buffers, scratch for peers' expert calls.
	RuntimeReserveBytes int64
	// Version is the build version advertised in node metadata.
	Version string

	// ClusterKey is the shared gossip encryption key (16, 24 or 32 bytes,
	// AES-128/192/256). Nodes with a different or no key cannot join.
	// Without TLS it also secures the Raft transport and the actor remote:
	// mutual TLS from a CA every node derives from the key (keytls.go).
	// Empty disables gossip encryption.
	ClusterKey []byte
	// TLS, when set, enables mutual TLS for the Raft transport and the actor
	// remote from these files instead of from the cluster key. The admin
	// HTTP API stays plain HTTP.
	TLS *TLSFiles
	// AdminKeys are bearer keys the admin API (/admin/…) accepts; setting
	// any guards it. With a ClusterKey nodes also accept, and send each
	// other, requests signed with a key derived from it (see adminauth.go).
	AdminKeys []string
	// AdminGuard guards the admin API even without AdminKeys: then only
	// nodes holding the cluster key get in.
	AdminGuard bool

	// MaxVoters is how many live nodes are Raft voters; nodes beyond are
	// non-voters (they replicate the map but do not vote). Typically 3 or 5.
	MaxVoters int
	// DeadGrace is how long a node memberlist declared dead stays in the
	// map (as NodeDead, excluded from placement) and in the Raft
	// configuration before the leader removes it.
	DeadGrace time.Duration
	// MissingGrace is how long a node in the map that this leader's
	// memberlist has never seen (typical right after a cluster restart) may
	// stay missing before it is marked dead.
	MissingGrace time.Duration
	// Replication is the number of replicas per expert the leader sets in
	// the map when it has none yet (≥ 1).
	Replication int
	// FaultInjection exposes POST/DELETE /admin/v1/fault, which makes this
	// node's expert actors slow (expert.Faults), for chaos tests and SRE
	// drills. Off by default; never enable it in production.
	FaultInjection bool
	// PlacementDebounce is how long the leader waits after a membership or
	// node-state change before running placement, to batch bursts.
	PlacementDebounce time.Duration
	// ReconcileInterval is the period of the leader's membership check (it
	// also runs on every memberlist event and map change).
	ReconcileInterval time.Duration
	// SessionExpiryInterval is how often the leader expires idle sessions.
	SessionExpiryInterval time.Duration
	// Load tunes live rebalancing from observed expert load (gating
	// counts); the zero value turns it off.
	Load LoadConfig
	// Fetch tunes fetching the model file's chunks from peers (FetchModel).
	Fetch FetchConfig
	// ApplyTimeout bounds one attempt of a Raft apply or a forwarded apply;
	// Node.Apply retries attempts until its context ends.
	ApplyTimeout time.Duration
	// LeaveTimeout bounds a graceful leave (leadership transfer, memberlist
	// leave broadcast, waiting to be removed from the Raft configuration).
	LeaveTimeout time.Duration
	// HTTPIdleTimeout closes a keep-alive HTTP connection that has waited
	// this long for its next request, so idle clients cannot hold the
	// process's file descriptors for good.
	HTTPIdleTimeout time.Duration

	// RaftHeartbeatTimeout is how long a follower waits without contact from
	// the leader before starting an election (raft.Config.HeartbeatTimeout).
	RaftHeartbeatTimeout time.Duration
	// RaftElectionTimeout is how long a candidate waits before retrying an
	// election (raft.Config.ElectionTimeout).
	RaftElectionTimeout time.Duration
	// RaftLeaderLeaseTimeout is how long a leader stays leader without
	// reaching a quorum (≤ RaftHeartbeatTimeout).
	RaftLeaderLeaseTimeout time.Duration
	// RaftCommitTimeout is the longest the leader waits before sending an
	// empty heartbeat-append (raft.Config.CommitTimeout).
	RaftCommitTimeout time.Duration
	// RaftSnapshotThreshold is the number of log entries after which Raft
	// snapshots the map.
	RaftSnapshotThreshold uint64
	// RaftSnapshotInterval is how often Raft checks whether to snapshot.
	RaftSnapshotInterval time.Duration

	// GossipProbeInterval is memberlist's failure-probe period.
	GossipProbeInterval time.Duration
	// GossipProbeTimeout is how long memberlist waits for a probe ack.
	GossipProbeTimeout time.Duration
	// GossipInterval is memberlist's gossip period.
	GossipInterval time.Duration
	// GossipSuspicionMult scales how long a suspected node has to refute
	// before it is declared dead (suspicion ≈ mult × probe interval for
	// clusters under 10 nodes).
	GossipSuspicionMult int

	// NoActorRemote starts the actor system without its gRPC remote. For
	// tests under the race detector only: protoactor-go's remote.Start sets
	// grpc's global logger on every call, which races with remotes already
	// running in the same process.
	NoActorRemote bool

	// Logger receives the node's, Raft's and memberlist's logs. Nil means
	// hclog's default logger at Info.
	Logger hclog.Logger
}

// RaftPeer names a Raft voter: its node ID and Raft address (HOST:PORT).
type RaftPeer struct {
	ID   string
	Addr string
}

// ParseRaftPeers parses "ID=HOST:PORT,…" (RaftRecover's flag form).
func ParseRaftPeers(s string) ([]RaftPeer, error) {
	var out []RaftPeer
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || id == "" {
			return nil, fmt.Errorf("%w: raft peer %q is not ID=HOST:PORT", ErrInvalidConfig, f)
		}
		if host, _, err := net.SplitHostPort(addr); err != nil || host == "" {
			return nil, fmt.Errorf("%w: raft peer %s: address %q is not HOST:PORT", ErrInvalidConfig, id, addr)
		}
		if seen[id] {
			return nil, fmt.Errorf("%w: raft peer %s named twice", ErrInvalidConfig, id)
		}
		seen[id] = true
		out = append(out, RaftPeer{ID: id, Addr: addr})
	}
	return out, nil
}

// TLSFiles names the PEM files of a node's mutual-TLS identity.
type TLSFiles struct {
	CAFile   string // cluster CA certificate; peers must chain to it
	CertFile string // this node's certificate (client and server auth)
	KeyFile  string // this node's private key
}

// DefaultRuntimeReserve is Config.RuntimeReserveBytes by default: what a
// node process uses besides weights and KV cache (measured at 20–40 MiB for
// a serving node on a small model; see docs/performance.md).
const DefaultRuntimeReserve = 64 << 20

// DefaultConfig returns a config tuned for a LAN: elections within ~1–2 s of
// a leader failure, dead nodes detected within ~4 s. Identity, addresses and
// DataDir must still be set.
func DefaultConfig() Config {
	return Config{
		Version:                "dev",
		MaxVoters:              5,
		DeadGrace:              10 * time.Second,
		MissingGrace:           5 * time.Second,
		Replication:            2,
		RuntimeReserveBytes:    DefaultRuntimeReserve,
		PlacementDebounce:      200 * time.Millisecond,
		ReconcileInterval:      time.Second,
		SessionExpiryInterval:  5 * time.Second,
		ApplyTimeout:           2 * time.Second,
		LeaveTimeout:           5 * time.Second,
		HTTPIdleTimeout:        2 * time.Minute,
		RaftHeartbeatTimeout:   600 * time.Millisecond,
		RaftElectionTimeout:    600 * time.Millisecond,
		RaftLeaderLeaseTimeout: 300 * time.Millisecond,
		RaftCommitTimeout:      50 * time.Millisecond,
		RaftSnapshotThreshold:  1024,
		RaftSnapshotInterval:   30 * time.Second,
		GossipProbeInterval:    time.Second,
		GossipProbeTimeout:     500 * time.Millisecond,
		GossipInterval:         100 * time.Millisecond,
		GossipSuspicionMult:    3,
		Load:                   DefaultLoadConfig(),
		Fetch:                  DefaultFetchConfig(),
	}
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate reports the first problem with c, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if !idPattern.MatchString(c.ID) {
		return bad("node id %q: want 1–63 letters, digits, '.', '_' or '-'", c.ID)
	}
	if c.DataDir == "" {
		return bad("data dir is required")
	}
	for _, a := range []struct{ name, addr string }{
		{"http", c.HTTPAddr}, {"gossip", c.GossipAddr}, {"raft", c.RaftAddr}, {"actor", c.ActorAddr},
	} {
		if err := checkAddr(a.addr); err != nil {
			return bad("%s address: %v", a.name, err)
		}
	}
	seen := map[string]string{}
	for _, a := range []struct{ name, addr string }{
		{"http", c.HTTPAddr}, {"gossip", c.GossipAddr}, {"raft", c.RaftAddr}, {"actor", c.ActorAddr},
	} {
		if other, dup := seen[a.addr]; dup {
			return bad("%s and %s addresses are both %s", other, a.name, a.addr)
		}
		seen[a.addr] = a.name
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return bad("join address %q: %v", j, err)
		}
	}
	switch len(c.ClusterKey) {
	case 0, 16, 24, 32:
	default:
		return bad("cluster key is %d bytes, want 16, 24 or 32", len(c.ClusterKey))
	}
	if c.TLS != nil && (c.TLS.CAFile == "" || c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		return bad("TLS needs CA, certificate and key files")
	}
	if c.MaxVoters < 1 {
		return bad("max voters %d < 1", c.MaxVoters)
	}
	if len(c.RaftRecover) > 0 && !slices.ContainsFunc(c.RaftRecover, func(p RaftPeer) bool { return p.ID == c.ID && p.Addr == c.RaftAddr }) {
		return bad("raft recovery voters %v do not include this node (%s=%s)", c.RaftRecover, c.ID, c.RaftAddr)
	}
	if c.Replication < 1 {
		return bad("replication %d < 1", c.Replication)
	}
	if c.CapacityBytes < 0 {
		return bad("capacity %d bytes < 0", c.CapacityBytes)
	}
	if c.MemoryLimitBytes < 0 || c.ServingBytes < 0 || c.RuntimeReserveBytes < 0 {
		return bad("memory limit %d, serving %d and runtime reserve %d bytes must be ≥ 0", c.MemoryLimitBytes, c.ServingBytes, c.RuntimeReserveBytes)
	}
	if c.MemoryLimitBytes > 0 && c.CapacityBytes > 0 {
		return bad("capacity and memory limit are both set; give one (capacity is derived from the memory limit)")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"dead grace", c.DeadGrace}, {"missing grace", c.MissingGrace},
		{"placement debounce", c.PlacementDebounce}, {"reconcile interval", c.ReconcileInterval},
		{"session expiry interval", c.SessionExpiryInterval}, {"apply timeout", c.ApplyTimeout},
		{"leave timeout", c.LeaveTimeout}, {"http idle timeout", c.HTTPIdleTimeout},
		{"raft heartbeat timeout", c.RaftHeartbeatTimeout}, {"raft election timeout", c.RaftElectionTimeout},
		{"raft leader lease timeout", c.RaftLeaderLeaseTimeout}, {"raft commit timeout", c.RaftCommitTimeout},
		{"raft snapshot interval", c.RaftSnapshotInterval},
		{"gossip probe interval", c.GossipProbeInterval}, {"gossip probe timeout", c.GossipProbeTimeout},
		{"gossip interval", c.GossipInterval},
	} {
		if d.v <= 0 {
			return bad("%s %v must be positive", d.name, d.v)
		}
	}
	if c.RaftLeaderLeaseTimeout > c.RaftHeartbeatTimeout {
		return bad("raft leader lease timeout %v exceeds heartbeat timeout %v", c.RaftLeaderLeaseTimeout, c.RaftHeartbeatTimeout)
	}
	if c.GossipProbeTimeout >= c.GossipProbeInterval {
		return bad("gossip probe timeout %v must be below the probe interval %v", c.GossipProbeTimeout, c.GossipProbeInterval)
	}
	if c.GossipSuspicionMult < 1 {
		return bad("gossip suspicion multiplier %d < 1", c.GossipSuspicionMult)
	}
	if c.RaftSnapshotThreshold == 0 {
		return bad("raft snapshot threshold must be positive")
	}
	if err := c.Fetch.Validate(); err != nil {
		return err
	}
	if err := c.Load.Validate(); err != nil {
		return err
	}
	return nil
}

// checkAddr accepts HOST:PORT with a concrete host and a port in 1–65535.
func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q has no host", a)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q: bind a concrete address, it is also advertised", a)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be 1–65535", a)
	}
	return nil
}

// PortBase returns the four addresses the shorthand --bind HOST --port-base N
// stands for: HTTP N, gossip N+1, Raft N+2, actor remote N+3.
func PortBase(host string, base int) (httpAddr, gossipAddr, raftAddr, actorAddr string) {
	a := func(off int) string { return net.JoinHostPort(host, strconv.Itoa(base+off)) }
	return a(0), a(1), a(2), a(3)
}
