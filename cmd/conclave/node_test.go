package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/api"
	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/router"
	"github.com/prometheus/client_golang/prometheus"
)

// nodeProc is one "conclave node" process.
type nodeProc struct {
	id   string
	args []string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// procCluster is n `conclave node` processes of the freshly built binary on
// loopback ports: n0 bootstraps, the others join it. Processes still
// running when the test ends are killed; their output is logged on failure.
type procCluster struct {
	t     *testing.T
	bin   string
	procs []*nodeProc
	addrs [][]string // per node: HTTP, gossip, Raft, actor
}

// startProcCluster builds the binary and starts n nodes with the common
// flags plus extra (a 1 GiB --capacity unless extra sizes the node with
// --capacity or --memory-limit), waiting until n0 answers HTTP.
func startProcCluster(t *testing.T, n int, extra ...string) *procCluster {
	t.Helper()
	return startProcClusterEach(t, n, nil, extra...)
}

// startProcClusterEach is startProcCluster with each(i)'s flags added to
// node i's (each may be nil).
func startProcClusterEach(t *testing.T, n int, each func(i int) []string, extra ...string) *procCluster {
	t.Helper()
	c := newProcClusterEach(t, n, each, extra...)
	for _, p := range c.procs {
		c.start(p)
		if p.id == "n0" {
			waitHTTP(t, c.addrs[0][0])
		}
	}
	return c
}

// newProcCluster is startProcCluster without starting the processes: start
// them with start (n0 first; it bootstraps).
func newProcCluster(t *testing.T, n int, extra ...string) *procCluster {
	t.Helper()
	return newProcClusterEach(t, n, nil, extra...)
}

func newProcClusterEach(t *testing.T, n int, each func(i int) []string, extra ...string) *procCluster {
	t.Helper()
	c := &procCluster{t: t, bin: filepath.Join(t.TempDir(), "conclave")}
	if out, err := exec.Command("go", "build", "-o", c.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	const key = "000102030405060708090a0b0c0d0e0f"
	// One FreeAddrs call holds every port until all are chosen, so no two
	// nodes get the same one.
	all := clustertest.FreeAddrs(t, 4*n)
	for i := range n {
		a := all[4*i : 4*i+4]
		c.addrs = append(c.addrs, a)
		args := []string{"node", "--id", fmt.Sprintf("n%d", i), "--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i)),
			"--http-addr", a[0], "--gossip-addr", a[1], "--raft-addr", a[2], "--actor-addr", a[3],
			"--cluster-key", key, "--log-level", "warn"}
		if !slices.Contains(extra, "--capacity") && !slices.Contains(extra, "--memory-limit") {
			args = append(args, "--capacity", "1GiB")
		}
		args = append(args, extra...)
		if each != nil {
			args = append(args, each(i)...)
		}
		if i > 0 {
			args = append(args, "--join", c.addrs[0][1])
		}
		c.procs = append(c.procs, &nodeProc{id: fmt.Sprintf("n%d", i), args: args})
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			if p.cmd != nil && p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
				<-p.done
			}
			if t.Failed() {
				t.Logf("%s output:\n%s", p.id, p.out)
			}
		}
	})
	return c
}

// start runs (or restarts, from its data dir) one node process.
func (c *procCluster) start(p *nodeProc) {
	c.t.Helper()
	p.cmd = exec.Command(c.bin, p.args...)
	p.out = &syncBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(p.cmd, p.done)
}

// waitNodeStates waits until cond holds on the nodes (by ID) the admin API
// at ac lists.
func waitNodeStates(t *testing.T, ac *cluster.AdminClient, timeout time.Duration, cond func(map[string]cluster.NodeStatus) bool, msg string) {
	t.Helper()
	clustertest.WaitFor(t, timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := ac.Nodes(ctx)
		if err != nil {
			return false
		}
		m := map[string]cluster.NodeStatus{}
		for _, n := range r.Nodes {
			m[n.ID] = n
		}
		return cond(m)
	}, msg)
}

func TestMultiProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs 3 processes")
	}
	pc := startProcCluster(t, 3, "--dead-grace", "30s")
	procs, addrs, start := pc.procs, pc.addrs, pc.start
	ac := &cluster.AdminClient{Base: "http://" + addrs[0][0]}
	waitNodes := func(msg string, cond func(map[string]cluster.NodeStatus) bool) {
		t.Helper()
		waitNodeStates(t, ac, 30*time.Second, cond, msg)
	}
	allActive := func(m map[string]cluster.NodeStatus) bool {
		if len(m) != 3 {
			return false
		}
		for _, n := range m {
			if n.State != router.NodeActive {
				return false
			}
		}
		return true
	}
	waitNodes("3 active nodes", allActive)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mod := router.Model{ID: "proc-moe", Version: 1, Layers: 2, Experts: 4, TopK: 2, ExpertBytes: 1 << 20, Live: true}
	if _, err := (&cluster.AdminClient{Base: "http://" + addrs[2][0]}).Apply(ctx, router.Command{Op: router.OpSetModel, Model: &mod}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	clustertest.WaitFor(t, 10*time.Second, func() bool {
		out.Reset()
		if err := cmdCluster([]string{"experts", "--addr", addrs[1][0]}, &out, &errOut); err != nil {
			return false
		}
		return strings.Contains(out.String(), "LAYER") && !strings.Contains(out.String(), "(unplaced)")
	}, "the experts table to show every expert placed")
	t.Logf("conclave cluster experts:\n%s", out.String())

	clustertest.WaitFor(t, 10*time.Second, func() bool {
		out.Reset()
		if err := cmdCluster([]string{"status", "--addr", addrs[1][0]}, &out, &errOut); !errors.Is(err, errUnhealthy) {
			return false
		}
		// The model set here has no file and no node hosts its experts:
		// placed everywhere, ready nowhere, which is the only problem.
		o := out.String()
		return strings.Contains(o, "health       degraded") && strings.Contains(o, "8 experts have no ready replica") &&
			!strings.Contains(o, "under-replicated") && !strings.Contains(o, "is dead") && !strings.Contains(o, "have no replica")
	}, "cluster status to report the experts placed but none ready")
	t.Logf("conclave cluster status:\n%s", out.String())
	// kill -9 n2: it is marked dead, then comes back from its data dir.
	killed := time.Now()
	procs[2].cmd.Process.Signal(syscall.SIGKILL)
	<-procs[2].done
	waitNodes("n2 marked dead", func(m map[string]cluster.NodeStatus) bool { return m["n2"].State == router.NodeDead })
	t.Logf("n2 killed with SIGKILL, marked dead after %v", time.Since(killed).Round(time.Millisecond))
	start(procs[2])
	waitNodes("n2 active again", allActive)
	t.Logf("n2 restarted and active again %v after the kill", time.Since(killed).Round(time.Millisecond))

	// Drain n1 through the CLI, then stop it with SIGTERM: it leaves.
	out.Reset()
	if err := cmdCluster([]string{"drain", "n1", "--addr", addrs[0][0], "--timeout", "20s"}, &out, &errOut); err != nil {
		t.Fatalf("drain: %v\n%s%s", err, out.String(), errOut.String())
	}
	t.Logf("conclave cluster drain n1:\n%s", out.String())
	procs[1].cmd.Process.Signal(syscall.SIGTERM)
	termed := time.Now()
	select {
	case err := <-procs[1].done:
		if err != nil {
			t.Errorf("n1 exit after SIGTERM: %v", err)
		}
		t.Logf("n1 left and exited %v after SIGTERM", time.Since(termed).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("n1 did not exit after SIGTERM")
	}
	waitNodes("n1 gone after its leave", func(m map[string]cluster.NodeStatus) bool { _, ok := m["n1"]; return !ok && len(m) == 2 })
	t.Logf("n1 removed from the map %v after SIGTERM", time.Since(termed).Round(time.Millisecond))
}

// waitHTTP waits until a node's /healthz answers 200.
func waitHTTP(t *testing.T, addr string) {
	t.Helper()
	ac := &cluster.AdminClient{Base: "http://" + addr}
	clustertest.WaitFor(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := ac.Status(ctx)
		return err == nil
	}, "node at "+addr+" to answer")
}

func TestNodeFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want func(cluster.Config) bool
		err  bool
	}{
		{"port base", []string{"--id", "a", "--data-dir", "d", "--bind", "127.0.0.2", "--port-base", "9000"}, func(c cluster.Config) bool {
			return c.HTTPAddr == "127.0.0.2:9000" && c.GossipAddr == "127.0.0.2:9001" && c.RaftAddr == "127.0.0.2:9002" && c.ActorAddr == "127.0.0.2:9003"
		}, false},
		{"override one", []string{"--id", "a", "--data-dir", "d", "--raft-addr", "127.0.0.1:7000", "--join", "h:1, h:2"}, func(c cluster.Config) bool {
			return c.RaftAddr == "127.0.0.1:7000" && c.HTTPAddr == "127.0.0.1:8080" && len(c.Join) == 2
		}, false},
		{"key and capacity", []string{"--id", "a", "--data-dir", "d", "--cluster-key", "AAECAwQFBgcICQoLDA0ODw==", "--capacity", "2GiB"}, func(c cluster.Config) bool {
			return len(c.ClusterKey) == 16 && c.CapacityBytes == 2<<30
		}, false},
		{"tls dir", []string{"--id", "a", "--data-dir", "d", "--tls-dir", "/x"}, func(c cluster.Config) bool {
			return c.TLS != nil && c.TLS.CertFile == "/x/a.crt" && c.TLS.CAFile == "/x/ca.crt"
		}, false},
		{"fault injection", []string{"--id", "a", "--data-dir", "d", "--enable-fault-injection"}, func(c cluster.Config) bool {
			return c.FaultInjection
		}, false},
		{"no fault injection by default", []string{"--id", "a", "--data-dir", "d"}, func(c cluster.Config) bool {
			return !c.FaultInjection
		}, false},
		{"raft recover", []string{"--id", "a", "--data-dir", "d", "--port-base", "9000", "--raft-recover", "a=127.0.0.1:9002, b=10.0.0.2:9002"}, func(c cluster.Config) bool {
			return len(c.RaftRecover) == 2 && c.RaftRecover[0] == cluster.RaftPeer{ID: "a", Addr: "127.0.0.1:9002"} && c.RaftRecover[1].ID == "b"
		}, false},
		{"raft recover without this node", []string{"--id", "a", "--data-dir", "d", "--raft-recover", "b=10.0.0.2:9002"}, nil, true},
		{"raft recover bad peer", []string{"--id", "a", "--data-dir", "d", "--raft-recover", "a=127.0.0.1:8082,b"}, nil, true},
		{"raft recover empty host", []string{"--id", "a", "--data-dir", "d", "--raft-recover", "a=127.0.0.1:8082,b=:8082"}, nil, true},
		{"raft recover twice", []string{"--id", "a", "--data-dir", "d", "--raft-recover", "a=127.0.0.1:8082,a=127.0.0.1:8082"}, nil, true},
		{"short key", []string{"--id", "a", "--data-dir", "d", "--cluster-key", "abcd"}, nil, true},
		{"no data dir", []string{"--id", "a"}, nil, true},
		{"bad id", []string{"--id", "a b", "--data-dir", "d"}, nil, true},
		{"bad capacity", []string{"--id", "a", "--data-dir", "d", "--capacity", "lots"}, nil, true},
		{"memory limit", []string{"--id", "a", "--data-dir", "d", "--memory-limit", "1.5GiB"}, func(c cluster.Config) bool {
			return c.MemoryLimitBytes == 3<<29 && c.CapacityBytes == 0 && c.RuntimeReserveBytes == cluster.DefaultRuntimeReserve
		}, false},
		{"memory limit and capacity", []string{"--id", "a", "--data-dir", "d", "--memory-limit", "2GiB", "--capacity", "1GiB"}, nil, true},
		{"zero memory limit", []string{"--id", "a", "--data-dir", "d", "--memory-limit", "0"}, nil, true},
		{"bad memory limit", []string{"--id", "a", "--data-dir", "d", "--memory-limit", "much"}, nil, true},
		{"NaN memory limit", []string{"--id", "a", "--data-dir", "d", "--memory-limit", "NaN"}, nil, true},
		{"NaN capacity", []string{"--id", "a", "--data-dir", "d", "--capacity", "NaNGiB"}, nil, true},
		{"zero capacity", []string{"--id", "a", "--data-dir", "d", "--capacity", "0"}, nil, true},
		{"bad log level", []string{"--id", "a", "--data-dir", "d", "--log-level", "bogus"}, nil, true},
		{"bad log format", []string{"--id", "a", "--data-dir", "d", "--log-format", "xml"}, nil, true},
		{"negative drain timeout", []string{"--id", "a", "--data-dir", "d", "--drain-timeout", "-1s"}, nil, true},
		{"no keys: admin open", []string{"--id", "a", "--data-dir", "d"}, func(c cluster.Config) bool {
			return len(c.AdminKeys) == 0 && !c.AdminGuard
		}, false},
		{"admin key", []string{"--id", "a", "--data-dir", "d", "--admin-key", "adm", "--api-key", "sk", "--cluster-key", "000102030405060708090a0b0c0d0e0f"}, func(c cluster.Config) bool {
			return slices.Equal(c.AdminKeys, []string{"adm"}) && c.AdminGuard
		}, false},
		{"api key guards admin, is no admin key", []string{"--id", "a", "--data-dir", "d", "--api-key", "sk", "--cluster-key", "000102030405060708090a0b0c0d0e0f"}, func(c cluster.Config) bool {
			return len(c.AdminKeys) == 0 && c.AdminGuard
		}, false},
		{"api key joining without cluster key", []string{"--id", "a", "--data-dir", "d", "--api-key", "sk", "--join", "h:1"}, nil, true},
		// A guarded node accepts joins too: without a cluster key anybody
		// reaching its gossip port would become a member.
		{"api key without cluster key", []string{"--id", "a", "--data-dir", "d", "--api-key", "sk"}, nil, true},
		{"admin key without cluster key", []string{"--id", "a", "--data-dir", "d", "--admin-key", "adm"}, nil, true},
		{"admin key joining without cluster key", []string{"--id", "a", "--data-dir", "d", "--admin-key", "adm", "--join", "h:1"}, nil, true},
		{"api key joining with cluster key", []string{"--id", "a", "--data-dir", "d", "--api-key", "sk", "--join", "h:1", "--cluster-key", "000102030405060708090a0b0c0d0e0f"}, func(c cluster.Config) bool {
			return c.AdminGuard && len(c.ClusterKey) == 16
		}, false},
		{"missing admin keys file", []string{"--id", "a", "--data-dir", "d", "--admin-keys-file", "/nonexistent/keys"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parsedFlags(t, false, tc.args).config(io.Discard)
			if tc.err {
				if !errors.Is(err, errUsage) {
					t.Fatalf("err %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

// parsedFlags registers node's (or serve's) flags and parses args.
func parsedFlags(t *testing.T, serve bool, args []string) *nodeFlags {
	t.Helper()
	name := "node"
	if serve {
		name = "serve"
	}
	fs := newFlags(name, io.Discard)
	f := &nodeFlags{}
	f.register(fs, serve)
	if err := parse(fs, args); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestServeDefaults(t *testing.T) {
	cfg, err := parsedFlags(t, true, nil).config(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:8080" || cfg.DataDir != "var/node" || len(cfg.Join) != 0 {
		t.Errorf("serve defaults %+v", cfg)
	}
	// A cluster of one: its gossip takes a key nobody else has, so no host
	// can join it (with --api-key too, which needs nothing more).
	other, err := parsedFlags(t, true, []string{"--api-key", "sk"}).config(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ClusterKey) != 32 || len(other.ClusterKey) != 32 || bytes.Equal(cfg.ClusterKey, other.ClusterKey) {
		t.Errorf("serve's cluster keys %x and %x: want a random one each", cfg.ClusterKey, other.ClusterKey)
	}
}

func TestServeEngineFlags(t *testing.T) {
	if got := parsedFlags(t, true, nil).serving.kvCache; got != "auto" {
		t.Errorf("--kv-cache defaults to %q, want auto", got)
	}
	for _, tc := range []struct {
		name string
		args []string
		want func(engine.Config) bool
	}{
		{"defaults", nil, func(c engine.Config) bool {
			d := engine.DefaultConfig()
			return c.MaxBatchTokens == d.MaxBatchTokens && c.PrefillChunk == d.PrefillChunk && c.MaxRunning == d.MaxRunning && c.Ctx == 0
		}},
		{"context", []string{"--ctx", "100"}, func(c engine.Config) bool { return c.Ctx == 100 }},
		{"batch and chunk", []string{"--max-batch-tokens", "128", "--prefill-chunk", "32", "--kv-cache", "1GiB"}, func(c engine.Config) bool {
			return c.MaxBatchTokens == 128 && c.PrefillChunk == 32 && c.KVBytes == 1<<30
		}},
		{"batch raised to running", []string{"--max-running", "96", "--max-batch-tokens", "64"}, func(c engine.Config) bool {
			return c.MaxRunning == 96 && c.MaxBatchTokens == 96
		}},
		{"negative chunk", []string{"--prefill-chunk", "-1"}, nil},
		{"zero running", []string{"--max-running", "0"}, nil},
		{"bad kv cache", []string{"--kv-cache", "some"}, nil},
		{"no kv cache", []string{"--kv-cache", "0"}, nil},
		{"negative context", []string{"--ctx", "-1"}, nil},
		{"context of one position", []string{"--ctx", "1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parsedFlags(t, true, tc.args).serving.engineConfig()
			if tc.want == nil {
				if !errors.Is(err, errUsage) {
					t.Fatalf("err %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

// TestServeSizesKV: --kv-cache auto (the default) sizes the pool to the
// model (AutoKVBytes: a small model gets what its sequences can use, one
// whose context needs more than the cap gets one sequence, so it starts);
// an explicit size is kept; a pool short of one sequence, or a --ctx beyond
// the model's, is a usage error naming the flags, before the node joins.
func TestServeSizesKV(t *testing.T) {
	m, err := openModel(synthModel(t), true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	long := *m.w // a context whose one sequence needs more than the cap
	seqBytes := func(w *model.Weights, ctx int) int64 {
		return int64(ctx) * kvcache.BlockBytes(w.Layers, w.KVDim(), 1, kernels.F16)
	}
	long.Ctx = int(engine.AutoKVCap/seqBytes(m.w, 1)) * 2
	for _, tc := range []struct {
		name   string
		w      *model.Weights
		args   []string
		pool   int64  // KVPoolBytes once sized
		ctx    int    // the engine's context
		usage  string // else: a usage error containing this
		usage2 string
	}{
		{"auto", m.w, nil, 64 * seqBytes(m.w, m.w.Ctx), m.w.Ctx, "", ""},
		{"auto, shorter context", m.w, []string{"--ctx", "64", "--max-running", "8"}, 8 * seqBytes(m.w, 64), 64, "", ""},
		{"auto, context mid-block", m.w, []string{"--ctx", "70", "--max-running", "3"}, 3 * seqBytes(m.w, 80), 70, "", ""},
		{"auto, long context", &long, nil, seqBytes(&long, long.Ctx), long.Ctx, "", ""},
		{"auto, long context shortened", &long, []string{"--ctx", "4096"}, 64 * seqBytes(&long, 4096), 4096, "", ""},
		{"explicit", m.w, []string{"--kv-cache", "3MiB"}, 3 << 20, m.w.Ctx, "", ""},
		{"explicit, short of a sequence", &long, []string{"--kv-cache", "512MiB"}, 0, 0, "--kv-cache 512MiB holds", "--ctx"},
		{"context beyond the model's", m.w, []string{"--ctx", "100000"}, 0, 0, "--ctx 100000", "context of 256 positions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sf := parsedFlags(t, true, tc.args).serving
			c, err := sf.engineConfig()
			if err != nil {
				t.Fatal(err)
			}
			err = sf.sizeKV(&c, tc.w)
			if tc.usage != "" {
				if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.usage) || !strings.Contains(err.Error(), tc.usage2) {
					t.Fatalf("err %v, want a usage error naming %q and %q", err, tc.usage, tc.usage2)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.KVPoolBytes(tc.w); got != tc.pool {
				t.Errorf("KV pool %d bytes, want %d", got, tc.pool)
			}
			if got := c.ContextLen(tc.w); got != tc.ctx {
				t.Errorf("context %d, want %d", got, tc.ctx)
			}
		})
	}
	// prepareServing (a node with --model, and one that fetched its copy)
	// sizes the pool before anything reads it.
	path := synthModel(t)
	sv, err := prepareServing(path, parsedFlags(t, true, nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.close()
	if got, want := sv.ecfg.KVPoolBytes(sv.model.w), 64*seqBytes(m.w, m.w.Ctx); got != want {
		t.Errorf("prepareServing's KV pool %d bytes, want %d", got, want)
	}
	if _, err := prepareServing(path, parsedFlags(t, true, []string{"--ctx", "100000"}), io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("prepareServing with --ctx beyond the model: %v, want a usage error", err)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "1KiB": 1024, "1.5 GiB": 3 << 29, "2GB": 2e9, "7B": 7} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1XB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) succeeded", in)
		}
	}
}

// TestKVCacheBeyondMemory: a KV pool larger than the memory this process
// may use is refused before the node starts (it was allocated after, and
// the runtime died of it).
func TestKVCacheBeyondMemory(t *testing.T) {
	if cluster.HostMemoryBytes() == 0 {
		t.Skip("this host's memory is unknown")
	}
	path := synthModel(t)
	_, stderr, code := cli(t, "serve", "--model", path, "--data-dir", t.TempDir(), "--port-base", "1", "--kv-cache", "900TiB")
	if code != 2 || !strings.Contains(stderr, "--kv-cache") || !strings.Contains(stderr, "memory") {
		t.Fatalf("exit %d, want 2 naming --kv-cache and the memory; stderr:\n%s", code, stderr)
	}
}

// TestServeAdoptsItsModel: serve restarted on its data dir with another
// --model serves that file (the README's path: make run, then serve
// --model F). It used to keep the data dir's model live, so the node never
// became ready and served only through the fallback, saying nothing.
func TestServeAdoptsItsModel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two serve processes")
	}
	a, b := synthModel(t), synthModel(t, "--seed", "7")
	pc := newProcClusterEach(t, 1, nil)
	p := pc.procs[0]
	addr := pc.addrs[0][0]
	dir := t.TempDir()
	serveArgs := func(model string) []string {
		return []string{"serve", "--model", model, "--data-dir", dir, "--http-addr", addr, "--gossip-addr", pc.addrs[0][1],
			"--raft-addr", pc.addrs[0][2], "--actor-addr", pc.addrs[0][3], "--log-level", "info"}
	}
	ready := func(model string) {
		t.Helper()
		want, err := cluster.InspectModel(model)
		if err != nil {
			t.Fatal(err)
		}
		clustertest.WaitFor(t, 60*time.Second, func() bool {
			resp, err := http.Get("http://" + addr + "/ready")
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
			m, err := (&cluster.AdminClient{Base: "http://" + addr}).Map(context.Background())
			return err == nil && m.Model != nil && m.Model.Digest == want.Digest
		}, "serve ready with "+filepath.Base(model))
	}
	p.args = serveArgs(a)
	pc.start(p)
	ready(a)
	// Ready only after the engine's warm-up step: its log line is written
	// before /ready turns 200 (the pipe may deliver it a moment later).
	clustertest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(p.out.String(), "engine warmed up") },
		"the warm-up's log line")
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	p.args = serveArgs(b)
	pc.start(p)
	ready(b)
	if !strings.Contains(p.out.String(), "is live now") {
		t.Errorf("serve did not say it replaced the data dir's model:\n%s", p.out.String())
	}
}

// TestSignalDuringStartup: SIGTERM while serve is still opening its model
// file stops it there. The file is a FIFO nobody writes, so the open blocks
// until the process goes; before, the signal waited for startup to finish,
// here forever.
func TestSignalDuringStartup(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	fifo := filepath.Join(t.TempDir(), "model.gguf")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	pc := newProcClusterEach(t, 1, nil)
	p := pc.procs[0]
	p.args = []string{"serve", "--model", fifo, "--data-dir", t.TempDir(), "--http-addr", pc.addrs[0][0],
		"--gossip-addr", pc.addrs[0][1], "--raft-addr", pc.addrs[0][2], "--actor-addr", pc.addrs[0][3]}
	pc.start(p)
	// The kernel names where a thread blocked opening a FIFO waits.
	opening := func() bool {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", p.cmd.Process.Pid))
		for _, w := range tasks {
			if b, err := os.ReadFile(w); err == nil && strings.TrimSpace(string(b)) == "wait_for_partner" {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(30 * time.Second)
	for !opening() {
		select {
		case err := <-p.done:
			t.Fatalf("serve exited before opening its model: %v\n%s", err, p.out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Skip("no thread seen waiting in wait_for_partner (/proc/PID/task/*/wchan not available here)")
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit after SIGTERM during startup: %v", err)
		}
		if !strings.Contains(p.out.String(), "signal during startup") {
			t.Errorf("output does not say why it stopped:\n%s", p.out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve still running 20 s after SIGTERM while opening its model\n%s", p.out.String())
	}
}

// TestLogFormatJSON checks that --log-format json makes the node's logger
// and the API's write JSON lines, one format for the whole process.
func TestLogFormatJSON(t *testing.T) {
	var buf bytes.Buffer
	f := parsedFlags(t, true, []string{"--log-format", "json", "--model", synthModel(t)})
	cfg, err := f.config(&buf)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := prepareServing(cfg.ModelPath, f, &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.close()
	cfg.Logger.Info("node line", "n", 1)
	sv.acfg.Logger.Warn("api line", "request_id", "r")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var msgs []string
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("a line is not JSON (%v): %q", err, l)
		}
		msgs = append(msgs, fmt.Sprint(rec["@module"], ": ", rec["@message"]))
	}
	for _, want := range []string{"conclave: node line", "conclave.api: api line"} {
		if !slices.Contains(msgs, want) {
			t.Errorf("no %q among %q", want, msgs)
		}
	}
}

// TestAPISlot: while a node loads its model its API routes answer for
// themselves instead of 404: /health 200 (a liveness probe must not kill a
// node fetching a large model), /ready 503, the API a 503 in its error
// format, /metrics the node's registry (a leader fetching its model stays
// visible to Prometheus); once set, the API serves them, its metrics beside
// the node's.
func TestAPISlot(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/v1/status", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "admin") })
	slot := newAPISlot()
	slot.register(mux)
	health := prometheus.NewGauge(prometheus.GaugeOpts{Name: "conclave:test_node_health", Help: "A node collector."})
	health.Set(1)
	slot.reg.MustRegister(health)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for path, want := range map[string]int{"/health": 200, "/ready": 503, "/v1/models": 503} {
		if code, body := get(path); code != want || !strings.Contains(body, "starting") {
			t.Errorf("%s while starting: %d %s, want %d", path, code, body, want)
		}
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "conclave:test_node_health 1") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics while starting: %d %s", code, body)
	}
	code, body := get("/v1/chat/completions")
	var e struct {
		Error struct{ Code, Type string } `json:"error"`
	}
	if json.Unmarshal([]byte(body), &e); code != 503 || e.Error.Code != "starting" || e.Error.Type != "service_unavailable_error" {
		t.Errorf("/v1 while starting: %d %s", code, body)
	}
	// As the node's NotFound, the slot answers other paths with the API's
	// 404, while starting and once set.
	notFound := func(state string) {
		t.Helper()
		w := httptest.NewRecorder()
		slot.ServeHTTP(w, httptest.NewRequest("GET", "/nope", nil))
		var e struct {
			Error struct{ Code, Type, Message string } `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != 404 || e.Error.Code != "not_found" || !strings.Contains(e.Error.Message, "/nope") {
			t.Errorf("/nope %s: %d %s", state, w.Code, w.Body)
		}
	}
	notFound("while starting")
	// Marked as a draining node's: an entry node forwarding a session to
	// this home (restarted, loading) re-homes it instead of passing it on.
	if resp, err := http.Post(srv.URL+"/v1/completions", "application/json", strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.Header.Get(api.HeaderDraining) == "" {
		t.Errorf("the starting 503 lacks %s", api.HeaderDraining)
	}

	m, err := openModel(synthModel(t), true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pool := kernels.NewPool(1)
	defer pool.Close()
	eng, err := engine.New(engine.DefaultConfig(), m.w, pool, m.tok.IsEOG)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	acfg := api.DefaultConfig()
	acfg.Registry = slot.reg
	a, err := api.New(acfg, eng, m.tok, api.ModelInfo{ID: "tiny", Context: eng.Ctx(), Dim: m.w.Dim})
	if err != nil {
		t.Fatal(err)
	}
	slot.set(a)
	if code, body := get("/ready"); code != 200 || !strings.Contains(body, "ready") {
		t.Errorf("/ready once set: %d %s", code, body)
	}
	if code, body := get("/v1/models"); code != 200 || !strings.Contains(body, `"tiny"`) {
		t.Errorf("/v1/models once set: %d %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "conclave:test_node_health 1") || !strings.Contains(body, "conclave:num_requests_running") {
		t.Errorf("/metrics once set: %d, want the node's and the API's metrics:\n%s", code, body)
	}
	if code, body := get("/admin/v1/status"); code != 200 || body != "admin" {
		t.Errorf("the node's own routes: %d %s", code, body)
	}
	notFound("once set")
}
