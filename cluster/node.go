package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Node is one running cluster member. Create it with Start; end it with
// Leave (graceful) or Kill (crash-like). All methods are safe for
// concurrent use.
type Node struct {
	cfg   Config
	log   hclog.Logger
	model *router.Model             // the model this node can load, nil without --model
	held  *heldModel                // its complete file and manifest, served to fetching peers
	copy  atomic.Pointer[ModelCopy] // the partial copy FetchModel made, for status

	verifiedCopies sync.Map // model copy paths whose held chunks FetchModel hashed again this run
	boot           bool     // this node bootstrapped a new cluster in Start

	fsm   *router.FSM
	raft  *raft.Raft
	store *raftStore
	// rejoinWarned is when rejoinFailed last logged.
	rejoinMu     sync.Mutex
	rejoinWarned time.Time
	idConflict   idConflict
	ml           *memberlist.Memberlist
	meta         *metaDelegate // what this node gossips about itself
	reachCheck   atomic.Bool   // noteRaftReached is asking the leader
	members      *members
	actors       *actor.ActorSystem
	remote       *remote.Remote
	mux          *http.ServeMux
	httpSrv      *http.Server
	auth         *adminAuth   // the admin API's credentials
	client       *http.Client // admin calls to peers (applies, leave): bounded
	peerHTTP     *http.Client // downloads from peers (model chunks, expert files)
	// proxyHTTP relays a caller's admin request to the leader with the
	// caller's own credentials, never this node's token.
	proxyHTTP *http.Client

	files *expertFiles            // expert files (hot updates) by digest
	xp    atomic.Pointer[Experts] // set by StartExperts

	placeMu      sync.Mutex // serialises placement runs (loop and rebalance requests)
	lastUnplaced [2]int     // experts without a replica, under-replicated, at the last placement (placeMu)

	ctx      context.Context // canceled when the node stops
	cancel   context.CancelFunc
	kickCh   chan struct{} // wakes the loop; buffered 1
	stopCh   chan struct{} // closed when the node stops
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Start validates cfg and brings a node up: Raft (bootstrapping a new
// cluster when the data dir is empty and there is nothing to join, or when
// cfg.Bootstrap), the actor system with remote, the HTTP server and
// memberlist, joining cfg.Join. A fresh node whose join addresses all fail
// returns an error wrapping ErrJoin; a node restarting from existing state
// keeps retrying its known peers in the background instead.
func Start(cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "conclave", Level: hclog.Info})
	}
	n := &Node{
		cfg:    cfg,
		log:    cfg.Logger.With("node", cfg.ID),
		fsm:    router.NewFSM(),
		mux:    http.NewServeMux(),
		files:  newExpertFiles(filepath.Join(cfg.DataDir, "experts")),
		auth:   newAdminAuth(cfg),
		kickCh: make(chan struct{}, 1),
		stopCh: make(chan struct{}),
	}
	// Peer clients carry this node's token and follow no redirect (a
	// redirect would take the token elsewhere).
	peer := &signingTransport{auth: n.auth}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	n.client = &http.Client{Timeout: cfg.ApplyTimeout + time.Second, Transport: peer, CheckRedirect: noRedirect}
	n.peerHTTP = &http.Client{Transport: peer, CheckRedirect: noRedirect}
	n.proxyHTTP = &http.Client{Timeout: cfg.ApplyTimeout + time.Second, CheckRedirect: noRedirect}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.members = newMembers(n.log.Named("memberlist"), n.kick)
	defer func() {
		if err != nil {
			n.shutdown(false)
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	var tc *tlsConfigs
	switch {
	case cfg.TLS != nil:
		if tc, err = loadTLS(*cfg.TLS); err != nil {
			return nil, err
		}
	case len(cfg.ClusterKey) > 0:
		if tc, err = keyTLS(cfg.ClusterKey, cfg.ID, cfg.RaftAddr, cfg.ActorAddr); err != nil {
			return nil, err
		}
	}
	var dense int64
	if cfg.ModelPath != "" {
		m, man, d, err := inspectModel(cfg.ModelPath)
		if err != nil {
			return nil, err
		}
		n.model, n.held, dense = &m, &heldModel{path: cfg.ModelPath, man: man}, d
	}
	devices := cfg.Devices
	if len(devices) == 0 {
		devices = []router.Device{hostMemory()}
	}
	capacity := cfg.CapacityBytes
	switch {
	case capacity > 0:
	case cfg.MemoryLimitBytes > 0:
		b := MemoryBudget{Limit: cfg.MemoryLimitBytes, Dense: dense, Serving: cfg.ServingBytes, Reserve: cfg.RuntimeReserveBytes}
		if capacity, err = b.ExpertCapacity(); err != nil {
			return nil, fmt.Errorf("node %s: %w", cfg.ID, err)
		}
		args := []any{"limit", b.Limit, "dense", b.Dense, "kv_cache_and_step", b.Serving, "runtime_reserve", b.Reserve, "expert_capacity", capacity}
		if n.model != nil && n.model.ExpertBytes > 0 {
			args = append(args, "experts_that_fit", capacity/n.model.ExpertBytes, "model_experts", n.model.Layers*n.model.Experts)
			if capacity < n.model.ExpertBytes {
				n.log.Warn("memory limit leaves room for no expert; this node will host none", append(args, "expert_bytes", n.model.ExpertBytes)...)
			}
		}
		n.log.Info("expert capacity from the memory limit", args...)
	default:
		for _, d := range devices {
			capacity += d.FreeBytes
		}
	}
	meta := NodeMeta{ID: cfg.ID, HTTP: cfg.HTTPAddr, Raft: cfg.RaftAddr, Actor: cfg.ActorAddr, Capacity: capacity, Version: cfg.Version,
		Boot: time.Now().UnixNano()}
	for _, d := range devices {
		meta.Devices = append(meta.Devices, metaDevice{Name: d.Name, Mem: d.MemBytes, Free: d.FreeBytes})
	}
	if n.model != nil {
		meta.Models = []string{n.model.Digest}
	}
	if n.meta, err = newMetaDelegate(meta); err != nil {
		return nil, err
	}

	existing, err := n.startRaft(tc)
	if err != nil {
		return nil, err
	}
	if err := n.startActors(tc); err != nil {
		return nil, err
	}
	if err := n.startHTTP(); err != nil {
		return nil, err
	}
	if err := n.startMemberlist(); err != nil {
		return nil, err
	}
	if len(cfg.Join) > 0 {
		if _, jerr := n.ml.Join(cfg.Join); jerr != nil && !existing {
			return nil, fmt.Errorf("%w: %v (--join takes a node's gossip address, its --port-base + 1, not its HTTP port)", ErrJoin, jerr)
		} else if jerr != nil {
			n.log.Warn("join failed; retrying in the background", "error", jerr)
		}
		// Another live node has this id: gossip ignores this one, which
		// would wait forever for a model and a map that never come. A node
		// restarting from its own data dir on a new address meets its
		// killed incarnation, which peers may still gossip as alive for a
		// while: that is not refused, only said.
		if other := n.idConflict.get(); other != "" {
			if !existing {
				return nil, fmt.Errorf("%w: node id %q is already in use by the node at %s (each node needs its own --id)", ErrJoin, cfg.ID, other)
			}
			n.log.Warn("peers still know this node id at another address (an earlier run of this node?); they will accept this one once gossip has declared that one dead",
				"id", cfg.ID, "other", other)
		}
	}
	n.wg.Add(1)
	go n.loop()
	if n.model != nil {
		n.wg.Add(1)
		go n.announceModel()
	}
	n.log.Info("node started", "http", cfg.HTTPAddr, "gossip", cfg.GossipAddr, "raft", cfg.RaftAddr,
		"actor", cfg.ActorAddr, "bootstrap", n.boot, "existing_state", existing, "tls", tlsMode(cfg),
		"gossip_encryption", len(cfg.ClusterKey) > 0)
	return n, nil
}

// dataDirLockWait is how long a node waits for its data dir's Raft store
// to be free before it gives up (ErrDataDirInUse).
const dataDirLockWait = 2 * time.Second

func (n *Node) startRaft(tc *tlsConfigs) (existing bool, err error) {
	cfg := n.cfg
	// bbolt locks its file; another process on this data dir holds it. Wait
	// a moment (a predecessor may be exiting), then fail instead of waiting
	// forever for the lock, unresponsive to signals.
	path := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: dataDirLockWait}})
	if errors.Is(err, bbolt.ErrTimeout) {
		return false, fmt.Errorf("%w: data dir %s is in use by another process (its %s is locked)", ErrDataDirInUse, cfg.DataDir, path)
	}
	if err != nil {
		return false, fmt.Errorf("cluster: raft store: %w", err)
	}
	n.store = &raftStore{bolt: store}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, n.log.Named("raft-snap"))
	if err != nil {
		return false, fmt.Errorf("cluster: raft snapshots: %w", err)
	}
	var trans raft.Transport
	if tc != nil {
		sl, err := newTLSStreamLayer(cfg.RaftAddr, tc)
		if err != nil {
			return false, fmt.Errorf("cluster: raft listen: %w", err)
		}
		trans = raft.NewNetworkTransportWithLogger(sl, 3, 5*time.Second, n.log.Named("raft-net"))
	} else {
		adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
		if err != nil {
			return false, err
		}
		trans, err = raft.NewTCPTransportWithLogger(cfg.RaftAddr, adv, 3, 5*time.Second, n.log.Named("raft-net"))
		if err != nil {
			return false, fmt.Errorf("cluster: raft listen: %w", err)
		}
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.RaftHeartbeatTimeout
	rc.ElectionTimeout = cfg.RaftElectionTimeout
	rc.LeaderLeaseTimeout = cfg.RaftLeaderLeaseTimeout
	rc.CommitTimeout = cfg.RaftCommitTimeout
	rc.SnapshotThreshold = cfg.RaftSnapshotThreshold
	rc.SnapshotInterval = cfg.RaftSnapshotInterval
	rc.Logger = n.log.Named("raft")
	if existing, err = raft.HasExistingState(n.store, n.store, snaps); err != nil {
		trans.(io.Closer).Close()
		return false, err
	}
	if len(cfg.RaftRecover) > 0 && !existing {
		trans.(io.Closer).Close()
		return false, fmt.Errorf("%w: raft recovery needs this node's Raft state, and data dir %s has none", ErrInvalidConfig, cfg.DataDir)
	}
	skip := false
	if len(cfg.RaftRecover) > 0 && recovered(cfg.DataDir, cfg.RaftRecover) {
		// This list was applied on an earlier start. Still a voter: a
		// restart that kept the flag, and recovering again would drop the
		// voters added since. No longer one (it left or was removed since):
		// a new emergency with the same survivors, so recover.
		probe := *rc // GetConfiguration marks the config it is given as not to start
		stored, err := raft.GetConfiguration(&probe, router.NewFSM(), n.store, n.store, snaps, trans)
		if err != nil {
			trans.(io.Closer).Close()
			return false, fmt.Errorf("cluster: raft recovery: reading the stored configuration: %w", err)
		}
		skip = slices.ContainsFunc(stored.Servers, func(s raft.Server) bool { return s.ID == rc.LocalID && s.Suffrage == raft.Voter })
		if skip {
			n.log.Warn("raft recovery with these voters was done on an earlier start and this node is still a voter; ignoring it. Drop --raft-recover; if this is a new emergency (the voters it names are gone), delete the file and start again",
				"voters", cfg.RaftRecover, "file", filepath.Join(cfg.DataDir, recoveredFile))
		}
	}
	if len(cfg.RaftRecover) > 0 && !skip {
		var conf raft.Configuration
		for _, p := range cfg.RaftRecover {
			conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
		}
		// RecoverCluster replays the log into an FSM and snapshots it; a
		// scratch one, since NewRaft restores n.fsm from that snapshot.
		if err := raft.RecoverCluster(rc, router.NewFSM(), n.store, n.store, snaps, trans, conf); err != nil {
			trans.(io.Closer).Close()
			return false, fmt.Errorf("cluster: raft recovery: %w", err)
		}
		if err := markRecovered(cfg.DataDir, cfg.RaftRecover); err != nil {
			trans.(io.Closer).Close()
			return false, err
		}
		n.log.Warn("raft configuration replaced for recovery: start every node listed with the same voters", "voters", cfg.RaftRecover)
	}
	r, err := raft.NewRaft(rc, n.fsm, n.store, n.store, snaps, trans)
	if err != nil {
		trans.(io.Closer).Close()
		return false, fmt.Errorf("cluster: raft: %w", err)
	}
	n.raft = r
	if !existing && (len(cfg.Join) == 0 || cfg.Bootstrap) {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: trans.LocalAddr(), Suffrage: raft.Voter,
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return false, fmt.Errorf("cluster: bootstrap: %w", err)
		}
		n.boot = true
	}
	return existing, nil
}

// recoveredFile, in a data dir, records the voters of the last Raft
// recovery done there.
const recoveredFile = "raft-recovered"

// recoveryLine is peers in a canonical form (sorted by ID), so that the
// same voters listed in another order compare equal.
func recoveryLine(peers []RaftPeer) string {
	peers = slices.Clone(peers)
	slices.SortFunc(peers, func(a, b RaftPeer) int { return strings.Compare(a.ID, b.ID) })
	var b strings.Builder
	for i, p := range peers {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.ID + "=" + p.Addr)
	}
	return b.String() + "\n"
}

// recovered reports whether the last Raft recovery in dir used peers.
func recovered(dir string, peers []RaftPeer) bool {
	b, err := os.ReadFile(filepath.Join(dir, recoveredFile))
	return err == nil && string(b) == recoveryLine(peers)
}

// markRecovered records a Raft recovery with peers in dir (synced: a crash
// right after must not let a restart recover again).
func markRecovered(dir string, peers []RaftPeer) error {
	path := filepath.Join(dir, recoveredFile)
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	if _, err := f.WriteString(recoveryLine(peers)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (n *Node) startActors(tc *tlsConfigs) (err error) {
	host, portStr, _ := net.SplitHostPort(n.cfg.ActorAddr)
	port, _ := strconv.Atoi(portStr)
	alog := slog.New(slogHandler{log: n.log.Named("actor")})
	n.actors = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return alog }))
	if n.cfg.NoActorRemote {
		return nil
	}
	var dialCreds grpc.DialOption
	var serverCreds grpc.ServerOption
	if tc != nil {
		dialCreds = grpc.WithTransportCredentials(credentials.NewTLS(tc.Client))
		serverCreds = grpc.Creds(credentials.NewTLS(tc.Server))
	}
	r := remote.NewRemote(n.actors, remote.Configure(host, port, expert.RemoteOptions(dialCreds, serverCreds)...))
	// remote.Start panics when it cannot listen.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cluster: actor remote: %v", p)
		}
	}()
	r.Start()
	n.remote = r
	return nil
}

// unmatched serves mux, handing nf the requests no pattern of mux matches
// under any method; one whose path a pattern matches under other methods
// gets a JSON 405 naming them (net/http's is a text page).
func unmatched(mux *http.ServeMux, nf http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, p := mux.Handler(r); p == "" {
			if allow := otherMethods(mux, r); len(allow) > 0 {
				w.Header().Set("Allow", strings.Join(allow, ", "))
				var b errorBody
				b.Error.Type = "method_not_allowed"
				b.Error.Message = fmt.Sprintf("%s %s is not supported; use %s", r.Method, r.URL.Path, strings.Join(allow, " or "))
				writeJSON(w, http.StatusMethodNotAllowed, b)
				return
			}
			nf.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// otherMethods returns the methods under which a pattern of mux matches
// r's path.
func otherMethods(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := mux.Handler(probe); p != "" {
			out = append(out, m)
		}
	}
	return out
}

func (n *Node) startHTTP() error {
	l, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("cluster: http listen: %w", err)
	}
	n.registerAdmin()
	if n.cfg.Routes != nil {
		n.cfg.Routes(n.mux)
	}
	switch {
	case n.auth.open() && !loopback(l.Addr()):
		n.log.Warn("the admin API is open on a non-loopback address: set --admin-key", "addr", l.Addr().String())
	case !n.auth.open() && len(n.cfg.AdminKeys) == 0:
		n.log.Warn("the admin API is closed to clients (API keys but no admin key): set --admin-key to use the CLI")
	}
	var h http.Handler = n.mux
	if n.cfg.NotFound != nil {
		h = unmatched(n.mux, n.cfg.NotFound)
	}
	n.httpSrv = &http.Server{
		Handler:           n.auth.guard(h),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       n.cfg.HTTPIdleTimeout,
		ErrorLog:          n.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	go func() {
		if err := n.httpSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server", "error", err)
		}
	}()
	return nil
}

func (n *Node) startMemberlist() error {
	host, portStr, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, _ := strconv.Atoi(portStr)
	ip, err := resolveIP(host)
	if err != nil {
		return err
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.cfg.ID
	mc.BindAddr, mc.BindPort = ip.String(), port
	mc.AdvertiseAddr, mc.AdvertisePort = ip.String(), port
	mc.ProbeInterval = n.cfg.GossipProbeInterval
	mc.ProbeTimeout = n.cfg.GossipProbeTimeout
	mc.GossipInterval = n.cfg.GossipInterval
	mc.SuspicionMult = n.cfg.GossipSuspicionMult
	mc.TCPTimeout = 3 * time.Second
	mc.Delegate = n.meta
	mc.Events = n.members
	n.idConflict.self = n.cfg.ID
	mc.Conflict = &n.idConflict
	if len(n.cfg.ClusterKey) > 0 {
		mc.SecretKey = n.cfg.ClusterKey
	}
	mc.Logger = n.log.Named("memberlist").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: memberlist: %w", err)
	}
	n.ml = ml
	return nil
}

func resolveIP(host string) (net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return nil, err
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip, nil
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("cluster: %s resolves to no address", host)
	}
	return ips[0], nil
}

// ID returns the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Config returns the node's config.
func (n *Node) Config() Config { return n.cfg }

// FSM returns the node's replica of the cluster map; Map and Changed are the
// read side.
func (n *Node) FSM() *router.FSM { return n.fsm }

// Map returns the node's current (locally applied) cluster map.
func (n *Node) Map() *router.Map { return n.fsm.Map() }

// Raft exposes the Raft peer for tests and diagnostics. Do not change its
// configuration directly: the leader's autopilot owns it.
func (n *Node) Raft() *raft.Raft { return n.raft }

// ActorSystem returns the node's protoactor system (with remote started).
func (n *Node) ActorSystem() *actor.ActorSystem { return n.actors }

// Mux is the node's HTTP mux; other packages mount their handlers on it.
func (n *Node) Mux() *http.ServeMux { return n.mux }

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's node id, "" when none is known.
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// Done is closed when the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.stopCh }

// Members returns this node's memberlist view: id → gossip state.
func (n *Node) Members() map[string]GossipState {
	tab, _ := n.members.snapshot()
	out := make(map[string]GossipState, len(tab))
	for id, m := range tab {
		out[id] = m.State
	}
	return out
}

// Kill stops the node at once, as a crash would: no leadership transfer,
// no leave message, no removal from Raft. Its data dir stays usable for a
// restart. It is for tests and for fatal errors.
func (n *Node) Kill() { n.shutdown(false) }

// Leave leaves the cluster gracefully and stops the node: a leader first
// hands leadership to another voter, then the node announces its leave on
// gossip and asks the leader to remove it from the Raft configuration and
// the map, so it neither blocks quorum nor placement. A single-node cluster
// simply shuts down. It returns the first error but always stops the node.
func (n *Node) Leave(ctx context.Context) error {
	select {
	case <-n.stopCh:
		return ErrStopped
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LeaveTimeout)
	defer cancel()
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	others := n.otherServers()
	if n.IsLeader() && n.otherVoters() > 0 {
		keep(waitFuture(ctx, n.raft.LeadershipTransfer()))
	}
	// Say it first, so peers record a departure, not a failure.
	if m := n.meta.get(); !m.Leaving {
		m.Leaving = true
		if err := n.meta.set(m); err == nil {
			keep(n.ml.UpdateNode(n.cfg.LeaveTimeout / 4))
		}
	}
	keep(n.ml.Leave(n.cfg.LeaveTimeout / 2))
	if others > 0 {
		keep(n.requestRemoval(ctx))
	}
	// Peers stop routing expert calls here once the map drops this node;
	// until then the hosted experts kept answering them. Stop them while
	// the actor system still runs.
	if x := n.xp.Load(); x != nil {
		x.Close()
	}
	n.shutdown(true)
	if firstErr != nil {
		n.log.Warn("leave was not clean", "error", firstErr)
	}
	return firstErr
}

// raftServer reports whether id is in the Raft configuration (false when
// it cannot be read).
func (n *Node) raftServer(id string) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}

// otherServers counts Raft servers besides this node.
func (n *Node) otherServers() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, s := range f.Configuration().Servers {
		if string(s.ID) != n.cfg.ID {
			c++
		}
	}
	return c
}

func (n *Node) otherVoters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, s := range f.Configuration().Servers {
		if string(s.ID) != n.cfg.ID && s.Suffrage == raft.Voter {
			c++
		}
	}
	return c
}

// requestRemoval asks the leader to drop this node from Raft and the map,
// retrying until ctx ends (the leader may be changing right now).
func (n *Node) requestRemoval(ctx context.Context) error {
	for {
		var err error
		if n.IsLeader() {
			err = n.removeNode(n.cfg.ID)
		} else if addr := n.leaderHTTP(); addr == "" {
			err = ErrNoLeader
		} else {
			err = (&AdminClient{Base: "http://" + addr, HTTP: n.client}).leave(ctx, n.cfg.ID)
		}
		if err == nil || errors.Is(err, ErrUnknownNode) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: leave: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// shutdown stops everything; graceful only changes the actor remote's stop.
func (n *Node) shutdown(graceful bool) {
	n.stopOnce.Do(func() {
		close(n.stopCh)
		n.cancel()
		n.wg.Wait()
		if n.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := n.httpSrv.Shutdown(ctx); err != nil {
				n.httpSrv.Close()
			}
			cancel()
		}
		if n.ml != nil {
			n.ml.Shutdown()
		}
		if n.raft != nil {
			if err := n.raft.Shutdown().Error(); err != nil {
				n.log.Warn("raft shutdown", "error", err)
			}
		}
		if n.store != nil {
			n.store.Close()
		}
		if n.remote != nil {
			n.remote.Shutdown(false)
		}
		if n.actors != nil {
			n.actors.Shutdown()
		}
		n.log.Info("node stopped", "graceful", graceful)
	})
}

// kick wakes the loop without blocking.
func (n *Node) kick() {
	select {
	case n.kickCh <- struct{}{}:
	default:
	}
}

// waitFuture waits for a raft future or ctx.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// peersFile is where the node keeps the gossip addresses of the members it
// last saw, to rejoin after a restart without --join.
const peersFile = "peers.json"

func (n *Node) savePeers(tab map[string]member) {
	var addrs []string
	for id, m := range tab {
		if id != n.cfg.ID && m.State == GossipAlive {
			addrs = append(addrs, net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))))
		}
	}
	if len(addrs) == 0 {
		return
	}
	slices.Sort(addrs)
	b, _ := json.Marshal(addrs)
	tmp := filepath.Join(n.cfg.DataDir, peersFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		os.Rename(tmp, filepath.Join(n.cfg.DataDir, peersFile))
	}
}

// rejoinCandidates are gossip addresses worth trying when this node sees no
// other member: --join, the saved peers and the map's nodes.
func (n *Node) rejoinCandidates() []string {
	set := map[string]bool{}
	for _, a := range n.cfg.Join {
		set[a] = true
	}
	if b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, peersFile)); err == nil {
		var saved []string
		if json.Unmarshal(b, &saved) == nil {
			for _, a := range saved {
				set[a] = true
			}
		}
	}
	for id, nd := range n.fsm.Map().Nodes {
		if id != n.cfg.ID && nd.GossipAddr != "" {
			set[nd.GossipAddr] = true
		}
	}
	delete(set, n.cfg.GossipAddr)
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// tlsMode names what secures Raft and the actor remote: certificate files,
// the cluster key (keyTLS) or nothing.
func tlsMode(cfg Config) string {
	switch {
	case cfg.TLS != nil:
		return "files"
	case len(cfg.ClusterKey) > 0:
		return "cluster-key"
	}
	return "off"
}

// idConflict records the address of another gossip member claiming this
// node's id (memberlist ignores it and logs the conflict).
type idConflict struct {
	mu    sync.Mutex
	self  string
	other string
}

func (c *idConflict) NotifyConflict(existing, other *memberlist.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.self != "" && existing.Name == c.self {
		c.other = other.Address()
	}
}

func (c *idConflict) get() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.other
}
