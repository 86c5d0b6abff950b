package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/api"
	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// cmdNode runs a cluster node until SIGINT/SIGTERM, then leaves gracefully.
func cmdNode(args []string, stdout, stderr io.Writer) error {
	return runNode("node", args, stdout, stderr)
}

// cmdServe is a one-node cluster with local defaults: 127.0.0.1, ports
// 8080–8083, data in var/node.
func cmdServe(args []string, stdout, stderr io.Writer) error {
	return runNode("serve", args, stdout, stderr)
}

// nodeFlags are the flags of node and serve.
type nodeFlags struct {
	serve                                     bool // conclave serve: a one-node cluster
	id, dataDir, join                         string
	bind                                      string
	portBase                                  int
	httpAddr, gossipAddr, raftAddr, actorAddr string
	bootstrap                                 bool
	raftRecover                               string
	modelPath                                 string
	key, keyFile                              string
	adminKey, adminKeysFile                   string
	tlsDir, tlsCA, tlsCert, tlsKey            string
	maxVoters, replication                    int
	deadGrace                                 time.Duration
	capacity, memoryLimit                     string
	faultInjection                            bool
	logLevel                                  string
	logFormat                                 string
	serving                                   servingFlags
}

// servingFlags configure the OpenAI API and the engine behind it.
type servingFlags struct {
	apiKey, apiKeysFile string
	rateLimit           float64
	rateBurst           int
	maxConcurrent       int
	maxBody             string
	maxTokens           int
	drainTimeout        time.Duration
	ioTimeout           time.Duration
	threads             int
	kvCache             string
	ctx                 int
	maxRunning          int
	maxBatchTokens      int
	prefillChunk        int
	expertTimeout       time.Duration
	peerKey             []byte // from the cluster key, not a flag
	peerAddr            string // this node's HTTP address, which peers' signatures name
}

func (s *servingFlags) register(fs *flag.FlagSet) {
	a, e := api.DefaultConfig(), engine.DefaultConfig()
	fs.StringVar(&s.apiKey, "api-key", "", "bearer API key clients must send (also CONCLAVE_API_KEY); none means an open API")
	fs.StringVar(&s.apiKeysFile, "api-keys-file", "", "file of accepted API keys, one per line (# comments)")
	fs.Float64Var(&s.rateLimit, "rate-limit", a.RequestsPerSecond, "requests per second per API key (0: unlimited)")
	fs.IntVar(&s.rateBurst, "rate-burst", 10, "rate-limit burst per API key, in requests")
	fs.IntVar(&s.maxConcurrent, "max-concurrent", a.MaxConcurrentPerKey, "concurrent requests per API key (0: unlimited)")
	fs.StringVar(&s.maxBody, "max-body", "1MiB", "largest request body")
	fs.IntVar(&s.maxTokens, "default-max-tokens", a.DefaultMaxTokens, "max_tokens when a request gives none (0: the rest of the context)")
	fs.DurationVar(&s.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long in-flight requests may run before they are cancelled")
	fs.DurationVar(&s.ioTimeout, "io-timeout", a.IOTimeout, "how long a request body, or each write of a response, may take before the client is dropped (0: no limit)")
	fs.IntVar(&s.threads, "threads", runtime.NumCPU(), "compute threads")
	fs.StringVar(&s.kvCache, "kv-cache", "auto", "KV cache memory; auto: room for --max-running sequences of the context, at most 512MiB unless one sequence needs more")
	fs.IntVar(&s.ctx, "ctx", 0, "most positions (prompt and output) per sequence (0: the model's context length)")
	fs.IntVar(&s.maxRunning, "max-running", e.MaxRunning, "most sequences decoding at once")
	fs.IntVar(&s.maxBatchTokens, "max-batch-tokens", e.MaxBatchTokens, "most tokens in one forward pass: every running sequence's decode token plus prefill chunks (raised to --max-running)")
	fs.IntVar(&s.prefillChunk, "prefill-chunk", e.PrefillChunk, "most prompt tokens one sequence gets in one forward pass (0: --max-batch-tokens)")
	fs.DurationVar(&s.expertTimeout, "expert-timeout", dispatch.DefaultConfig().Timeout, "deadline of one remote expert call; a call that misses it is retried on another replica")
}

func (f *nodeFlags) register(fs *flag.FlagSet, serve bool) {
	f.serve = serve
	defID, defDir := hostID(), ""
	if serve {
		defID, defDir = "local", "var/node"
	}
	d := cluster.DefaultConfig()
	fs.StringVar(&f.id, "id", defID, "node id (unique in the cluster)")
	fs.StringVar(&f.dataDir, "data-dir", defDir, "directory for the Raft log, snapshots and peers")
	if !serve {
		fs.StringVar(&f.join, "join", "", "comma-separated gossip addresses HOST:PORT of existing members")
		fs.BoolVar(&f.bootstrap, "bootstrap", false, "bootstrap a new cluster even with --join (only when the data dir is empty)")
		fs.StringVar(&f.raftRecover, "raft-recover", "", "emergency, only when no node has a leader: ID=HOST:PORT,… (Raft addresses, this node among them) replace the Raft voters in this node's data dir, keeping its map; start every node listed with the same list, once (see README)")
	}
	fs.StringVar(&f.bind, "bind", "127.0.0.1", "host for all four listeners (with --port-base)")
	fs.IntVar(&f.portBase, "port-base", 8080, "HTTP port; gossip +1, Raft +2, actor remote +3")
	fs.StringVar(&f.httpAddr, "http-addr", "", "HTTP HOST:PORT (overrides --bind/--port-base)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "", "memberlist HOST:PORT (overrides --bind/--port-base)")
	fs.StringVar(&f.raftAddr, "raft-addr", "", "Raft HOST:PORT (overrides --bind/--port-base)")
	fs.StringVar(&f.actorAddr, "actor-addr", "", "actor remote HOST:PORT (overrides --bind/--port-base)")
	if !serve {
		fs.StringVar(&f.modelPath, "model", "", "GGUF model this node loads and serves (the first one sets the cluster's model)")
	}
	fs.StringVar(&f.key, "cluster-key", "", "cluster key, 16/24/32 bytes as hex or base64 (e.g. openssl rand -hex 32): encrypts gossip, signs node-to-node calls and, without --tls-dir, gives Raft and the actors mutual TLS; the same on every node")
	fs.StringVar(&f.keyFile, "cluster-key-file", "", "file holding the cluster key")
	fs.StringVar(&f.adminKey, "admin-key", "", "bearer key the admin API (/admin/…) requires (also CONCLAVE_ADMIN_KEY); with API keys but no admin key it is closed to clients. Nodes with a cluster key reach each other's with a token derived from it")
	fs.StringVar(&f.adminKeysFile, "admin-keys-file", "", "file of accepted admin keys, one per line (# comments)")
	fs.StringVar(&f.tlsDir, "tls-dir", "", "directory from 'conclave cluster init-tls' (uses ca.crt, ID.crt, ID.key): mutual TLS for Raft and actors")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "cluster CA certificate (instead of --tls-dir)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "node certificate (instead of --tls-dir)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "node key (instead of --tls-dir)")
	fs.IntVar(&f.maxVoters, "max-voters", d.MaxVoters, "Raft voters; further nodes join as non-voters")
	fs.IntVar(&f.replication, "replication", d.Replication, "replicas per expert for a new cluster")
	fs.DurationVar(&f.deadGrace, "dead-grace", d.DeadGrace, "how long a dead node stays before removal")
	fs.StringVar(&f.capacity, "capacity", "", "bytes of expert weights this node may host (e.g. 8GiB; default: from the memory limit if there is one, else free memory)")
	fs.StringVar(&f.memoryLimit, "memory-limit", "", "memory this node may keep resident (e.g. 16GiB; default: the cgroup's limit, if any); expert capacity = limit − dense weights − KV cache − 64 MiB runtime reserve (not with --capacity)")
	fs.BoolVar(&f.faultInjection, "enable-fault-injection", false, "expose POST /admin/v1/fault to make this node's expert actors slow (chaos tests and drills only)")
	fs.StringVar(&f.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text, or json: one JSON object per line (the API's, Raft's, gossip's and the actors' logs alike)")
	if serve {
		fs.StringVar(&f.modelPath, "model", "", "GGUF model to serve (default: the demo model, synthesized into "+demoPath+" on first use)")
	}
	f.serving.register(fs)
}

func (f *nodeFlags) config(stderr io.Writer) (cluster.Config, error) {
	cfg := cluster.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.Bootstrap, cfg.ModelPath = f.id, f.dataDir, f.bootstrap, f.modelPath
	cfg.MaxVoters, cfg.Replication, cfg.DeadGrace = f.maxVoters, f.replication, f.deadGrace
	cfg.Version = buildVersion()
	cfg.FaultInjection = f.faultInjection
	if cfg.DataDir == "" {
		return cfg, fmt.Errorf("%w: --data-dir is required", errUsage)
	}
	if f.raftRecover != "" {
		peers, err := cluster.ParseRaftPeers(f.raftRecover)
		if err != nil {
			return cfg, fmt.Errorf("%w: --raft-recover: %v", errUsage, err)
		}
		cfg.RaftRecover = peers
	}
	if !validLogLevel(f.logLevel) {
		return cfg, fmt.Errorf("%w: --log-level %q: want trace, debug, info, warn or error", errUsage, f.logLevel)
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		return cfg, fmt.Errorf("%w: --log-format %q: want text or json", errUsage, f.logFormat)
	}
	if f.serving.drainTimeout < 0 {
		return cfg, fmt.Errorf("%w: --drain-timeout %v is negative", errUsage, f.serving.drainTimeout)
	}
	cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr = cluster.PortBase(f.bind, f.portBase)
	for _, o := range []struct {
		dst *string
		v   string
	}{
		{&cfg.HTTPAddr, f.httpAddr}, {&cfg.GossipAddr, f.gossipAddr}, {&cfg.RaftAddr, f.raftAddr}, {&cfg.ActorAddr, f.actorAddr},
	} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	for _, j := range strings.Split(f.join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			cfg.Join = append(cfg.Join, j)
		}
	}
	var err error
	switch {
	case f.key != "" && f.keyFile != "":
		return cfg, fmt.Errorf("%w: give --cluster-key or --cluster-key-file, not both", errUsage)
	case f.key != "":
		cfg.ClusterKey, err = cluster.ParseKey(f.key)
	case f.keyFile != "":
		cfg.ClusterKey, err = cluster.ReadKeyFile(f.keyFile)
	}
	if err != nil {
		return cfg, fmt.Errorf("%w: %v", errUsage, err)
	}
	if cfg.AdminKeys, err = readKeys("admin", f.adminKey, "CONCLAVE_ADMIN_KEY", f.adminKeysFile); err != nil {
		return cfg, err
	}
	// API keys protect the port, so they close the admin routes on it too
	// (to all but admin keys and peers); they are never admin keys.
	ak, err := apiKeys(f.serving.apiKey, f.serving.apiKeysFile)
	if err != nil {
		return cfg, err
	}
	cfg.AdminGuard = len(ak) > 0
	// Gossip admits whoever holds the cluster key, and without one anybody
	// who reaches the port: a member is put in the map, gets sessions (and
	// the clients' requests with their keys), fetches. So a node guarded
	// by keys needs one, and serve, a cluster of one, makes one up that
	// nobody else has.
	switch {
	case len(cfg.ClusterKey) > 0:
	case f.serve:
		cfg.ClusterKey = make([]byte, 32)
		rand.Read(cfg.ClusterKey)
	case cfg.AdminGuard || len(cfg.AdminKeys) > 0:
		return cfg, fmt.Errorf("%w: a node with API or admin keys must share a --cluster-key (or --cluster-key-file) with its peers: without one any host reaching its gossip port joins the cluster (make one with: openssl rand -hex 32)", errUsage)
	}
	switch {
	case f.tlsDir != "" && (f.tlsCA != "" || f.tlsCert != "" || f.tlsKey != ""):
		return cfg, fmt.Errorf("%w: give --tls-dir or --tls-ca/--tls-cert/--tls-key, not both", errUsage)
	case f.tlsDir != "":
		t := cluster.TLSLayout(f.tlsDir, cfg.ID)
		cfg.TLS = &t
	case f.tlsCA != "" || f.tlsCert != "" || f.tlsKey != "":
		cfg.TLS = &cluster.TLSFiles{CAFile: f.tlsCA, CertFile: f.tlsCert, KeyFile: f.tlsKey}
	}
	if f.capacity != "" && f.memoryLimit != "" {
		return cfg, fmt.Errorf("%w: give --capacity or --memory-limit, not both (--memory-limit derives the capacity)", errUsage)
	}
	if f.capacity != "" {
		// 0 would read as unset (all free memory), the opposite of what it says.
		if cfg.CapacityBytes, err = parseBytes(f.capacity); err != nil || cfg.CapacityBytes == 0 {
			return cfg, fmt.Errorf("%w: --capacity: %q is not a positive size (omit it to use free memory)", errUsage, f.capacity)
		}
	}
	switch {
	case f.memoryLimit != "":
		if cfg.MemoryLimitBytes, err = parseBytes(f.memoryLimit); err != nil || cfg.MemoryLimitBytes == 0 {
			return cfg, fmt.Errorf("%w: --memory-limit: %q is not a positive size", errUsage, f.memoryLimit)
		}
	case f.capacity == "":
		// In a container or a unit with MemoryMax, the cgroup's limit is
		// the memory limit.
		if limit, ok := cluster.CgroupMemoryLimit(); ok {
			cfg.MemoryLimitBytes = limit
			fmt.Fprintf(stderr, "conclave: memory limit %s from this process's cgroup (override with --memory-limit or --capacity)\n", humanBytes(limit))
		}
	}
	cfg.Logger = cluster.NewLoggerFormat("conclave", stderr, f.logLevel, f.logFormat == "json")
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%w: %v", errUsage, err)
	}
	return cfg, nil
}

func runNode(name string, args []string, stdout, stderr io.Writer) error {
	fs := newFlags(name, stderr)
	var f nodeFlags
	f.register(fs, name == "serve")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	cfg, err := f.config(stderr)
	f.serving.peerKey = cluster.PeerKey(cfg.ClusterKey)
	f.serving.peerAddr = cfg.HTTPAddr
	if err != nil {
		return err
	}
	if name == "serve" && cfg.ModelPath == "" {
		if cfg.ModelPath, err = ensureDemo(stdout); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var sv *serving
	// Loading a model file and digesting it (in cluster.Start) can take
	// minutes for a large model; a signal meanwhile stops the process
	// there instead of after startup. Nothing has been served or joined
	// yet, so the step is abandoned with the process, not awaited.
	interrupted := func() error {
		fmt.Fprintf(stdout, "conclave %s %s: signal during startup: stopping\n", name, cfg.ID)
		return nil
	}
	if cfg.ModelPath != "" {
		// Flags and the model file are checked before the node joins.
		if sv, err = untilSignal(ctx, func() (*serving, error) { return prepareServing(cfg.ModelPath, &f, stderr) }); errors.Is(err, errInterrupted) {
			return interrupted()
		} else if err != nil {
			return err
		}
		defer sv.close()
		// The KV pool and a full step's buffers (the warm-up fills them)
		// count against --memory-limit.
		if cfg.ServingBytes, err = sv.servingBytes(&f); err != nil {
			return err
		}
	}
	// The API's routes answer "starting" from the moment the listener opens
	// (joining may take seconds), until the model is loaded.
	slot := newAPISlot()
	cfg.Routes, cfg.NotFound = slot.register, slot
	n, err := untilSignal(ctx, func() (*cluster.Node, error) { return cluster.Start(cfg) })
	if errors.Is(err, errInterrupted) {
		return interrupted()
	}
	if errors.Is(err, cluster.ErrMemoryLimit) {
		return fmt.Errorf("%w (raise --memory-limit, or lower --kv-cache, --ctx, --max-running or --max-batch-tokens)", err)
	}
	if err != nil {
		return err
	}
	// Raft and membership health are on /metrics from now on, while the
	// model loads or is fetched too, and then beside the API's metrics.
	slot.reg.MustRegister(n.Collector())
	if sv != nil && name == "serve" && len(cfg.Join) == 0 {
		// A single-node serve restarted on its data dir with another
		// --model serves that file: the map's live model follows it (else
		// the node would never be ready, serving through the fallback).
		if err := adoptModel(ctx, n, cfg.ModelPath, stdout); err != nil {
			n.Kill()
			return err
		}
	}
	if sv != nil {
		// Experts run in actors placed through the map; the engine
		// dispatches each layer's groups to them (locally when hosted here).
		if err := sv.start(n, slot.reg); err != nil {
			n.Kill()
			return err
		}
		slot.set(sv.api)
	}
	fmt.Fprintf(stdout, "conclave %s %s: http %s gossip %s raft %s actor %s data %s\n",
		name, cfg.ID, cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr, cfg.DataDir)
	if sv == nil {
		// Without a model file, wait for the cluster's live model and fetch
		// from the nodes holding it what this node needs to serve it.
		fmt.Fprintf(stdout, "conclave %s %s: no --model: waiting for the cluster's model to fetch it from a peer\n", name, cfg.ID)
		if sv, err = fetchServing(ctx, n, &f, slot.reg, stdout, stderr); err != nil && ctx.Err() == nil {
			n.Kill()
			return err
		}
		if sv != nil {
			defer sv.close()
			slot.set(sv.api)
		}
	}
	if sv != nil {
		fmt.Fprintf(stdout, "conclave %s %s: serving %s (context %d) at http://%s/v1\n", name, cfg.ID, sv.info.ID, sv.info.Context, cfg.HTTPAddr)
	}
	select {
	case <-ctx.Done():
		stop() // a second signal kills the process
		if sv != nil {
			// Stop taking requests (/ready answers 503), let in-flight
			// streams finish within --drain-timeout, then stop the engine.
			// The hosted experts keep serving peers until Leave has taken
			// this node out of the map.
			fmt.Fprintf(stdout, "conclave %s %s: draining\n", name, cfg.ID)
			dctx, cancel := context.WithTimeout(context.Background(), f.serving.drainTimeout)
			if err := sv.api.Drain(dctx); err != nil {
				fmt.Fprintf(stderr, "conclave: drain: %v (in-flight requests were cancelled)\n", err)
			}
			cancel()
			sv.stopEngine()
			defer sv.close()
		}
		fmt.Fprintf(stdout, "conclave %s %s: leaving\n", name, cfg.ID)
		lctx, cancel := context.WithTimeout(context.Background(), cfg.LeaveTimeout+5*time.Second)
		defer cancel()
		if err := n.Leave(lctx); err != nil && !errors.Is(err, cluster.ErrStopped) {
			fmt.Fprintf(stderr, "conclave: leave: %v\n", err)
		}
	case <-n.Done():
	}
	return nil
}

// errInterrupted is untilSignal's answer when the signal came first.
var errInterrupted = errors.New("interrupted")

// untilSignal runs a startup step and returns its result, or errInterrupted
// as soon as ctx (the signal context) ends first, leaving the step to run
// on until the process exits.
func untilSignal[T any](ctx context.Context, step func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := step()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		select {
		case r := <-ch: // finished too: the caller's shutdown path handles it
			return r.v, r.err
		default:
		}
		var zero T
		return zero, errInterrupted
	}
}

// apiSlot holds the OpenAI API's routes (/v1/, /health, /ready, /metrics)
// on the node's mux from the moment its listener opens
// (cluster.Config.Routes). Until the node's model is loaded and its API set
// (minutes, for a node fetching its part of a large model) it answers them
// itself instead of the mux's 404: /health 200 (the process is alive: a
// liveness probe must not kill it while it loads), /ready 503, /metrics the
// node's registry (Go runtime, process, and once the node has started Raft
// and membership health: a leader fetching its model is not invisible to
// Prometheus), the rest a 503 in the API's error format.
type apiSlot struct {
	api atomic.Pointer[http.Handler]
	reg *prometheus.Registry
}

func newAPISlot() *apiSlot {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &apiSlot{reg: reg}
}

// register puts the slot on mux's API routes.
func (s *apiSlot) register(mux *http.ServeMux) {
	for _, p := range []string{"/v1/", "/health", "/ready", "/metrics"} {
		mux.Handle(p, s)
	}
}

// set routes the API's requests to a, and those no route of the node
// matches (cluster.Config.NotFound) to its OpenAI-style 404.
func (s *apiSlot) set(a *api.Server) {
	h := a.Handler()
	s.api.Store(&h)
}

func (s *apiSlot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := s.api.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch path := r.URL.Path; {
	case path != "/health" && path != "/ready" && path != "/metrics" && !strings.HasPrefix(path, "/v1/"):
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": "no route " + r.Method + " " + path,
			"type": "invalid_request_error", "param": nil, "code": "not_found"}})
	case path == "/health":
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"status":"starting"}`+"\n")
	case path == "/ready":
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"status":"starting"}`+"\n")
	case path == "/metrics":
		promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	default:
		// Marked as a draining node's 503: an entry node forwarding a
		// session here (its home, restarted and loading) re-homes it.
		w.Header().Set(api.HeaderDraining, "1")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"message":"this node is starting: its model is not loaded yet; retry shortly or on another node","type":"service_unavailable_error","param":null,"code":"starting"}}`+"\n")
	}
}

// demoPath is where serve keeps the demo model.
const demoPath = "var/demo.gguf"

// ensureDemo synthesizes the demo model into demoPath unless it is there.
func ensureDemo(stdout io.Writer) (string, error) {
	if _, err := os.Stat(demoPath); err == nil {
		return demoPath, nil
	}
	c, err := synth.Preset("demo")
	if err != nil {
		return "", err
	}
	fmt.Fprintf(stdout, "conclave: synthesizing the demo model into %s (first run only)\n", demoPath)
	if err := os.MkdirAll(filepath.Dir(demoPath), 0o755); err != nil {
		return "", err
	}
	tmp := demoPath + ".tmp"
	if err := synth.Write(c, tmp); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return demoPath, os.Rename(tmp, demoPath)
}

// fetchServing waits until the map has a live model that some other node
// holds, or whose copy an earlier run of this node began, fetches this
// node's copy (header and dense tensors now, experts as placement gives
// them; none of what it holds already), then serves it like a node with
// --model. A restarted node that holds what it needs so serves while the
// nodes with the whole file are down. It returns nil, ctx's error when ctx
// ends or the node stops first.
func fetchServing(ctx context.Context, n *cluster.Node, f *nodeFlags, reg *prometheus.Registry, stdout, stderr io.Writer) (*serving, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	// A restarted node's map is what its data dir held until the leader
	// reaches it: the model live then, not now.
	if err := n.WaitCaughtUp(ctx); err != nil {
		return nil, err
	}
	for {
		changed := n.FSM().Changed()
		m := n.Map()
		if mod := m.Model; mod != nil && mod.Live && len(mod.Digest) == 64 && (hasOtherHost(m, mod.Digest, n.ID()) || n.HasModelCopy(mod.Digest)) {
			t0 := time.Now()
			mc, err := n.FetchModel(ctx, *mod)
			if err == nil {
				st := mc.Stats()
				fmt.Fprintf(stdout, "conclave node %s: fetched the dense part of %s (%s of %s) in %v\n", n.ID(), mod.ID,
					ibytes(st.FetchedBytes), ibytes(st.Size), time.Since(t0).Round(time.Millisecond))
				sv, err := prepareServing(mc.Path(), f, stderr)
				if err != nil {
					mc.Close()
					return nil, err
				}
				sv.copy, sv.fileID = mc, mod.ID
				// As for a node started with the file: the dense weights, the
				// KV pool and the step buffers come off --memory-limit before
				// anything is allocated, and the capacity placement sees
				// shrinks to what is left.
				serving, err := sv.servingBytes(f)
				var capacity int64
				if err == nil {
					capacity, err = n.AccountServing(sv.model.w.DenseBytes(), serving)
					if errors.Is(err, cluster.ErrMemoryLimit) {
						err = fmt.Errorf("%w (raise --memory-limit, or lower --kv-cache, --ctx, --max-running or --max-batch-tokens)", err)
					}
				}
				if err == nil {
					err = waitPlacedWithin(ctx, n, capacity, stderr)
				}
				if err != nil {
					sv.close()
					return nil, err
				}
				if err := sv.start(n, reg); err != nil {
					sv.close()
					return nil, err
				}
				return sv, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !hasOtherHost(m, mod.Digest, n.ID()) {
				// Its own copy lacks chunks and no node has them: wait
				// for one, or for another live model. Other map changes
				// (load reports, sessions) do not wake it.
				fmt.Fprintf(stderr, "conclave: fetch model %s: %v (waiting for a node with the whole file)\n", mod.ID, err)
				for {
					select {
					case <-changed:
					case <-ctx.Done():
						return nil, ctx.Err()
					}
					changed = n.FSM().Changed()
					m := n.Map()
					if m.Model == nil || m.Model.Digest != mod.Digest || !m.Model.Live || hasOtherHost(m, mod.Digest, n.ID()) {
						break
					}
				}
				continue
			}
			fmt.Fprintf(stderr, "conclave: fetch model %s: %v (retrying)\n", mod.ID, err)
			retry := time.NewTimer(time.Second)
			select {
			case <-retry.C:
				continue
			case <-ctx.Done():
				retry.Stop()
				return nil, ctx.Err()
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// hasOtherHost reports whether a live node other than self holds the
// complete file of digest.
func hasOtherHost(m *router.Map, digest, self string) bool {
	for _, id := range cluster.ModelHosts(m, digest) {
		if id != self {
			return true
		}
	}
	return false
}

// serving is a loaded model with its engine and API.
type serving struct {
	model   *loaded
	copy    *cluster.ModelCopy // the partial file, for a node without --model
	fileID  string             // the model id when the file has no general.name ("": its base name)
	path    string
	pool    *kernels.Pool
	experts *cluster.Experts
	eng     *engine.Engine
	api     *api.Server
	info    api.ModelInfo
	acfg    api.Config
	ecfg    engine.Config
	// expertTimeout is the dispatcher's per-call deadline (--expert-timeout).
	expertTimeout time.Duration
	stopWarm      context.CancelFunc // ends a warm-up still waiting or running
	once, engOnce sync.Once
}

// warm runs the engine's warm-up step once every expert has a ready
// replica, computing only the experts this node runs (its peers warm
// themselves), then sets warmed. A warm-up that fails is logged and counts
// as done: it only moves a cost, and readiness must not hang on it.
func (s *serving) warm(ctx context.Context, warmed *atomic.Bool) {
	if err := s.experts.WaitReady(ctx); err != nil {
		return
	}
	log := s.acfg.Logger
	if log == nil {
		log = slog.Default()
	}
	start := time.Now()
	if err := s.eng.Warm(ctx, s.experts.LocalRunner()); err != nil {
		if ctx.Err() != nil {
			return
		}
		log.Warn("engine warm-up failed; serving without it", "err", err)
	} else {
		log.Info("engine warmed up", "seconds", time.Since(start).Seconds())
	}
	warmed.Store(true)
}

// stopEngine stops generating; the experts this node hosts keep serving.
func (s *serving) stopEngine() {
	s.engOnce.Do(func() {
		if s.stopWarm != nil {
			s.stopWarm()
		}
		if s.eng != nil {
			s.eng.Close()
		}
	})
}

// waitPlacedWithin waits, before the node starts fetching and hosting
// experts, until the map has its capacity and places on it no more expert
// bytes than that: placement had given the node experts for the larger
// capacity it gossiped before it knew its model. It gives up after
// placedWithinWait with a warning (the leader may be busy; the placement
// follows soon after) and returns only ctx's error.
func waitPlacedWithin(ctx context.Context, n *cluster.Node, capacity int64, stderr io.Writer) error {
	if capacity <= 0 {
		return nil
	}
	fits := func(m *router.Map) bool {
		nd, ok := m.Nodes[n.ID()]
		if !ok || nd.Capacity != capacity {
			return false
		}
		return m.Model == nil || int64(len(m.ExpertsOn(n.ID())))*m.Model.ExpertBytes <= capacity
	}
	timer := time.NewTimer(placedWithinWait)
	defer timer.Stop()
	for {
		changed := n.FSM().Changed()
		if fits(n.Map()) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			fmt.Fprintf(stderr, "conclave: node %s: the map has not placed this node's experts within its capacity of %s after %v; starting anyway\n",
				n.ID(), ibytes(capacity), placedWithinWait)
			return nil
		}
	}
}

// placedWithinWait bounds waitPlacedWithin.
const placedWithinWait = 30 * time.Second

// servingBytes is what the engine will hold outside the model: the KV pool
// and a full step's buffers (the warm-up fills both). It refuses a pool
// larger than the memory this process may use: the pool is allocated whole
// at start, and past that the runtime would die of it after the node had
// joined.
func (s *serving) servingBytes(f *nodeFlags) (int64, error) {
	kv := s.ecfg.KVPoolBytes(s.model.w)
	if mem := cluster.HostMemoryBytes(); mem > 0 && kv > mem {
		fix := "lower --kv-cache"
		if f.serving.kvCache == "auto" {
			fix = "lower --ctx or --max-running, or set --kv-cache"
			if kv <= s.ecfg.SequenceKVBytes(s.model.w) {
				fix = "lower --ctx: the pool is one sequence of the context already"
			}
		}
		return 0, fmt.Errorf("%w: --kv-cache %s: a KV pool of %.1f GiB is more than the %.1f GiB of memory this process may use (%s)",
			errUsage, f.serving.kvCache, float64(kv)/(1<<30), float64(mem)/(1<<30), fix)
	}
	return kv + s.ecfg.StepBytes(s.model.w, s.pool.Threads()), nil
}

func (s *serving) close() {
	s.once.Do(func() {
		s.stopEngine()
		if s.experts != nil {
			s.experts.Close()
		}
		s.pool.Close()
		s.model.Close()
		if s.copy != nil {
			s.copy.Close()
		}
	})
}

// start hosts this node's experts, then starts the engine and the API on
// top of the expert dispatcher.
func (s *serving) start(n *cluster.Node, reg *prometheus.Registry) (err error) {
	var src cluster.ExpertSource
	if s.copy != nil {
		src = s.copy
	}
	dc := dispatch.DefaultConfig()
	dc.Timeout = s.expertTimeout
	if s.experts, err = n.StartExpertsFrom(s.model.w, s.pool, dc, src); err != nil {
		return err
	}
	if s.eng, err = engine.New(s.ecfg, s.model.w, s.pool, s.model.tok.IsEOG, engine.WithExperts(s.experts.Runner()),
		engine.WithWeightsVersion(s.experts.WeightsVersion)); err != nil {
		return err
	}
	if log := s.acfg.Logger; log != nil {
		w, c := s.model.w, s.ecfg
		pool := c.KVPoolBytes(w)
		log.Info("KV cache allocated", "bytes", pool,
			"positions", pool/kvcache.BlockBytes(w.Layers, w.KVDim(), c.BlockSize, c.KVType)*int64(c.BlockSize),
			"context", s.eng.Ctx(), "max_running", c.MaxRunning)
	}
	id := modelID(s.model, s.path)
	if s.fileID != "" && !hasName(s.model) {
		id = s.fileID
	}
	s.info = api.ModelInfo{ID: id, Context: s.eng.Ctx(), Dim: s.model.w.Dim}
	if st, err := os.Stat(s.path); err == nil {
		s.info.Created = st.ModTime()
	}
	// /ready and /v1/models wait until every expert of this node's model
	// has a ready replica somewhere in the cluster, and the engine has run
	// its warm-up step: no client meets the cost of the first full step.
	warmed := new(atomic.Bool)
	s.acfg.ModelReady = func() bool { return warmed.Load() && s.experts.Ready() }
	wctx, cancel := context.WithCancel(context.Background())
	s.stopWarm = cancel
	go s.warm(wctx, warmed)
	// and refuses to generate while another model is live: its dense
	// weights with that model's experts would be neither model.
	s.acfg.Serving = s.experts.Serving
	// A node an operator drained leaves load balancers' rotation (/ready
	// 503) while it still answers what reaches it.
	s.acfg.Drained = func() bool {
		nd, ok := n.Map().Nodes[n.ID()]
		return ok && nd.State == router.NodeDraining
	}
	// Requests of one session run on its home node, where its prefix
	// cache is; other nodes forward them there.
	if s.acfg.Sessions, err = cluster.NewSessionRouter(n, cluster.DefaultSessionConfig()); err != nil {
		return err
	}
	// The API's metrics join the node's registry (the Go runtime, the
	// process, Raft and membership health), which /metrics served alone
	// while the model loaded.
	s.acfg.Registry = reg
	if s.api, err = api.New(s.acfg, s.eng, s.model.tok, s.info); err != nil {
		return err
	}
	// Per-expert load (bounded series: per layer, top-8 hot experts).
	return s.api.Registry().Register(s.experts.Collector())
}

var _ api.SessionRouter = (*cluster.SessionRouter)(nil)

// engineConfig is the scheduler and KV cache configuration the flags give.
func (sf *servingFlags) engineConfig() (engine.Config, error) {
	c := engine.DefaultConfig()
	c.MaxRunning = sf.maxRunning
	c.MaxBatchTokens = max(sf.maxBatchTokens, sf.maxRunning)
	c.PrefillChunk = sf.prefillChunk
	c.Ctx = sf.ctx
	if sf.ctx < 0 || sf.ctx == 1 { // a prompt token and an output token at least
		return c, fmt.Errorf("%w: --ctx %d: want 0 (the model's context) or at least 2", errUsage, sf.ctx)
	}
	if sf.kvCache == "auto" {
		c.KVBytes = engine.AutoKVCap // sized to the model by sizeKV
	} else {
		var err error
		if c.KVBytes, err = parseBytes(sf.kvCache); err != nil {
			return c, fmt.Errorf("%w: --kv-cache: %v", errUsage, err)
		}
		if c.KVBytes <= 0 {
			return c, fmt.Errorf("%w: --kv-cache %s: want a positive size or auto", errUsage, sf.kvCache)
		}
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	return c, nil
}

// sizeKV fits the engine configuration to the model's weights: --ctx
// within the model's context, the KV pool auto-sized where --kv-cache is
// auto, and a pool that holds one sequence of the context (the engine
// refuses less), checked before the node joins with an error naming the
// flags that fix it.
func (sf *servingFlags) sizeKV(c *engine.Config, w *model.Weights) error {
	if sf.ctx > w.Ctx {
		return fmt.Errorf("%w: --ctx %d is more than the model's context of %d positions", errUsage, sf.ctx, w.Ctx)
	}
	if sf.kvCache == "auto" {
		c.KVBytes = c.AutoKVBytes(w)
	}
	if pool, one := c.KVPoolBytes(w), c.SequenceKVBytes(w); pool < one {
		positions := pool / kvcache.BlockBytes(w.Layers, w.KVDim(), c.BlockSize, c.KVType) * int64(c.BlockSize)
		return fmt.Errorf("%w: --kv-cache %s holds %d positions, less than one sequence of the %d-position context (%s): raise --kv-cache (or leave it auto), or lower --ctx",
			errUsage, sf.kvCache, positions, c.ContextLen(w), ibytes(one))
	}
	return nil
}

// prepareServing checks the serving flags and opens the model.
func prepareServing(path string, f *nodeFlags, stderr io.Writer) (_ *serving, err error) {
	sf := &f.serving
	acfg := api.DefaultConfig()
	acfg.RequestsPerSecond, acfg.Burst, acfg.MaxConcurrentPerKey = sf.rateLimit, sf.rateBurst, sf.maxConcurrent
	acfg.DefaultMaxTokens = sf.maxTokens
	acfg.IOTimeout = sf.ioTimeout
	acfg.PeerKey, acfg.PeerAddr = sf.peerKey, sf.peerAddr
	if acfg.MaxBodyBytes, err = parseBytes(sf.maxBody); err != nil {
		return nil, fmt.Errorf("%w: --max-body: %v", errUsage, err)
	}
	if acfg.APIKeys, err = apiKeys(sf.apiKey, sf.apiKeysFile); err != nil {
		return nil, err
	}
	// The API logs through the cluster's logger, so a node writes one format.
	acfg.Logger = cluster.SlogLogger(cluster.NewLoggerFormat("conclave.api", stderr, f.logLevel, f.logFormat == "json"))
	if err := acfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	ecfg, err := sf.engineConfig()
	if err != nil {
		return nil, err
	}
	if sf.expertTimeout <= 0 {
		return nil, fmt.Errorf("%w: --expert-timeout must be positive", errUsage)
	}
	if sf.threads < 1 {
		return nil, fmt.Errorf("%w: --threads must be at least 1", errUsage)
	}
	m, err := openModel(path, true)
	if err != nil {
		return nil, err
	}
	if err := sf.sizeKV(&ecfg, m.w); err != nil {
		m.Close()
		return nil, err
	}
	return &serving{model: m, path: path, pool: kernels.NewPool(sf.threads), acfg: acfg, ecfg: ecfg, expertTimeout: sf.expertTimeout}, nil
}

// modelID is general.name, else the file's base name without .gguf.
func modelID(m *loaded, path string) string {
	if name, err := m.file.StringOr("general.name", ""); err == nil && strings.TrimSpace(name) != "" {
		return strings.TrimSpace(name)
	}
	return strings.TrimSuffix(filepath.Base(path), ".gguf")
}

// hasName reports whether the model file has a general.name.
func hasName(m *loaded) bool {
	name, err := m.file.StringOr("general.name", "")
	return err == nil && strings.TrimSpace(name) != ""
}

// apiKeys gathers keys from --api-key, CONCLAVE_API_KEY and --api-keys-file
// (one per line; blank lines and # comments skipped).
func apiKeys(key, file string) ([]string, error) {
	return readKeys("api", key, "CONCLAVE_API_KEY", file)
}

// readKeys gathers the keys of --KIND-key (else $env) and --KIND-keys-file.
func readKeys(kind, key, env, file string) ([]string, error) {
	var keys []string
	if key == "" {
		key = os.Getenv(env)
	}
	if key != "" {
		keys = append(keys, key)
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%w: --%s-keys-file: %v", errUsage, kind, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				keys = append(keys, line)
			}
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("%w: --%s-keys-file %s holds no keys", errUsage, kind, file)
		}
	}
	return keys, nil
}

// validLogLevel reports whether s names a level the cluster's logger knows.
func validLogLevel(s string) bool {
	switch strings.ToLower(s) {
	case "trace", "debug", "info", "warn", "error":
		return true
	}
	return false
}

var nonID = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// hostID is the default node id: the host name made id-safe.
func hostID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "node"
	}
	h = strings.Trim(nonID.ReplaceAllString(h, "-"), "-._")
	if len(h) > 63 {
		h = h[:63]
	}
	if h == "" {
		return "node"
	}
	return h
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// parseBytes reads a size: plain bytes or with a KB/MB/GB/TB (1000s) or
// KiB/MiB/GiB/TiB (1024s) suffix.
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mul    int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mul
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0) || v*float64(mul) > 1<<62 { // !(v >= 0): NaN too
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(v * float64(mul)), nil
}

// adminKey is the admin key a CLI command sends: --admin-key, else
// $CONCLAVE_ADMIN_KEY.
func adminKey(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv("CONCLAVE_ADMIN_KEY")
}

const adminKeyUsage = "admin API key (default $CONCLAVE_ADMIN_KEY)"

// adoptModel makes the model file at path the cluster's live model when
// the map (restored from the data dir) names another: once n leads and has
// applied its log, it sets the file's model, as `conclave model load`
// would, and says what it replaced. A fresh data dir, or the same file,
// changes nothing.
func adoptModel(ctx context.Context, n *cluster.Node, path string, stdout io.Writer) error {
	mod, err := cluster.InspectModel(path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for n.Leader() != n.ID() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("serve: waiting to lead its one-node cluster: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := n.Raft().Barrier(10 * time.Second).Error(); err != nil { // the restored log applied
		return fmt.Errorf("serve: applying the data dir's log: %w", err)
	}
	live := n.Map().Model
	if live == nil || live.Digest == mod.Digest {
		return nil // announced by the node itself, or already this file
	}
	mod.Version = live.Version + 1
	mod.Live = true
	if err := n.Apply(ctx, router.Command{Op: router.OpSetModel, Model: &mod}); err != nil {
		return fmt.Errorf("serve: making %s the live model: %w", path, err)
	}
	fmt.Fprintf(stdout, "conclave serve: the data dir held model %s (digest %.12s); %s (digest %.12s) is live now\n",
		live.ID, live.Digest, mod.ID, mod.Digest)
	return nil
}
