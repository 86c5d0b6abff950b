// Package clustertest starts whole Conclave clusters inside one test
// process: N real nodes (Raft, memberlist, actor remote, admin HTTP) on
// loopback ports, with helpers to wait for conditions, find the leader, kill,
// stop and restart nodes. Library logs go to t.Log at the level in
// $CONCLAVE_TEST_LOG (default warn).
package clustertest

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/go-hclog"
)

// FastConfig is cluster.DefaultConfig tuned for loopback: quicker failure
// detection and shorter grace periods, still safe on a loaded 2-core box.
func FastConfig() cluster.Config {
	c := cluster.DefaultConfig()
	c.DeadGrace = 3 * time.Second
	c.MissingGrace = 3 * time.Second
	c.ReconcileInterval = 250 * time.Millisecond
	c.SessionExpiryInterval = 500 * time.Millisecond
	c.PlacementDebounce = 100 * time.Millisecond
	c.GossipProbeInterval = 400 * time.Millisecond
	c.GossipProbeTimeout = 200 * time.Millisecond
	c.GossipSuspicionMult = 2
	c.LeaveTimeout = 3 * time.Second
	c.CapacityBytes = 1 << 30
	c.Devices = []router.Device{{Name: "cpu", MemBytes: 2 << 30, FreeBytes: 1 << 30}}
	return c
}

// Options adjust a test cluster.
type Options struct {
	// Config returns node i's base config (FastConfig when nil); the
	// fixture fills in ID, DataDir, addresses, Join and Logger.
	Config func(i int) cluster.Config
	// NoWait returns from New before the nodes agree on the map.
	NoWait bool
	// Logs, when set, also receives every node's log lines (at LogLevel).
	Logs io.Writer
	// LogLevel is the nodes' log level when CONCLAVE_TEST_LOG does not
	// set one (warn when empty).
	LogLevel string
}

// Cluster is a set of in-process nodes. Node i is "n<i>"; node 0 bootstraps
// and the others join it.
type Cluster struct {
	t    testing.TB
	opts Options
	logw *logWriter
	base string // the nodes' data dirs are under it

	mu    sync.Mutex
	nodes []*cluster.Node // nil while stopped
	cfgs  []cluster.Config
}

// New starts n nodes and (unless opts.NoWait) waits until every node sees
// all n active in an identical map. Nodes are stopped at test cleanup.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	// The data dirs' base first: cleanups run last-registered first, so
	// the nodes stop before their files are removed (removing them under
	// a running node failed when it wrote one meanwhile).
	c := &Cluster{t: t, opts: opts, base: t.TempDir()}
	c.logw = newLogWriter(t)
	t.Cleanup(c.logw.close) // runs after the node shutdown below
	t.Cleanup(c.Close)
	for i := 0; i < n; i++ {
		c.add(filepath.Join(c.base, fmt.Sprintf("n%d", i)))
	}
	if !opts.NoWait {
		c.WaitActive(30*time.Second, n)
	}
	return c
}

// Add starts one more node joining the cluster and returns its index.
func (c *Cluster) Add() int {
	c.t.Helper()
	return c.add(filepath.Join(c.base, fmt.Sprintf("n%d", c.Len())))
}

func (c *Cluster) add(dir string) int {
	c.t.Helper()
	i := c.Len()
	cfg := FastConfig()
	if c.opts.Config != nil {
		cfg = c.opts.Config(i)
	}
	cfg.ID = fmt.Sprintf("n%d", i)
	cfg.DataDir = dir
	addrs := FreeAddrs(c.t, 4)
	cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr = addrs[0], addrs[1], addrs[2], addrs[3]
	if i > 0 && len(cfg.Join) == 0 {
		cfg.Join = []string{c.cfgs[0].GossipAddr}
	}
	cfg.Logger = c.logger(cfg.ID)
	if raceEnabled {
		// protoactor-go's remote.Start writes grpc's global logger while
		// other in-process remotes read it: an upstream race.
		cfg.NoActorRemote = true
	}
	nd, err := cluster.Start(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.ID, err)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, nd)
	c.cfgs = append(c.cfgs, cfg)
	c.mu.Unlock()
	if i == 0 {
		WaitFor(c.t, 15*time.Second, func() bool { return nd.IsLeader() }, "n0 to lead the new cluster")
	}
	return i
}

func (c *Cluster) logger(name string) hclog.Logger {
	lv := cmp.Or(os.Getenv("CONCLAVE_TEST_LOG"), c.opts.LogLevel, "warn")
	var w io.Writer = c.logw
	if c.opts.Logs != nil {
		w = io.MultiWriter(c.logw, c.opts.Logs)
	}
	return cluster.NewLogger(name, w, lv)
}

// Close stops every running node without leaving (fast).
func (c *Cluster) Close() {
	c.mu.Lock()
	nodes := append([]*cluster.Node(nil), c.nodes...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.Kill() }()
		}
	}
	wg.Wait()
}

// ActorRemotes reports whether the fixture's nodes run the actor remote
// (false under the race detector).
func ActorRemotes() bool { return !raceEnabled }

// Len is the number of nodes ever started (running or not).
func (c *Cluster) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// Node returns node i, nil while it is stopped.
func (c *Cluster) Node(i int) *cluster.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Config returns the config node i was (last) started with.
func (c *Cluster) Config(i int) cluster.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfgs[i]
}

// Running returns the indexes of running nodes.
func (c *Cluster) Running() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, n := range c.nodes {
		if n != nil {
			out = append(out, i)
		}
	}
	return out
}

// Leader returns the index of a running node that is the Raft leader, or -1.
func (c *Cluster) Leader() int {
	for _, i := range c.Running() {
		if n := c.Node(i); n != nil && n.IsLeader() {
			return i
		}
	}
	return -1
}

// WaitLeader waits for a leader among the running nodes and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) int {
	c.t.Helper()
	l := -1
	WaitFor(c.t, timeout, func() bool { l = c.Leader(); return l >= 0 }, "a leader")
	return l
}

// Kill stops node i abruptly (no leave, no leadership transfer).
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n == nil {
		c.t.Fatalf("kill n%d: not running", i)
	}
	n.Kill()
}

// Stop makes node i leave gracefully.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n == nil {
		c.t.Fatalf("stop n%d: not running", i)
	}
	if err := n.Leave(context.Background()); err != nil {
		c.t.Logf("leave n%d: %v", i, err)
	}
}

// Restart starts node i again from its data dir with the same addresses.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	cfg := c.Config(i)
	if c.Node(i) != nil {
		c.t.Fatalf("restart n%d: still running", i)
	}
	var nd *cluster.Node
	var err error
	// The ports were ours a moment ago; retry briefly in case the kernel
	// has not released one yet.
	WaitFor(c.t, 10*time.Second, func() bool {
		nd, err = cluster.Start(cfg)
		return err == nil
	}, fmt.Sprintf("n%d to restart", i))
	c.mu.Lock()
	c.nodes[i] = nd
	c.mu.Unlock()
}

// WaitFor polls cond (every 10 ms) until it holds, failing the test with msg
// after timeout.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitMap waits until cond holds on node i's map, waking on its FSM's
// changes (and every 100 ms for conditions that depend on more than the
// map), and returns that map.
func (c *Cluster) WaitMap(i int, timeout time.Duration, cond func(*router.Map) bool, msg string) *router.Map {
	c.t.Helper()
	n := c.Node(i)
	if n == nil {
		c.t.Fatalf("wait on n%d: not running", i)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := n.FSM().Changed()
		m := n.Map()
		if cond(m) {
			return m
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline.C:
			c.t.Fatalf("n%d: timed out after %v waiting for %s (epoch %d)", i, timeout, msg, m.Epoch)
		}
	}
}

// Agreed returns the common map when every running node holds an equal
// map (same epoch and content), else nil.
func (c *Cluster) Agreed() *router.Map {
	var first *router.Map
	for _, i := range c.Running() {
		n := c.Node(i)
		if n == nil {
			return nil
		}
		m := n.Map()
		if first == nil {
			first = m
		} else if !first.Equal(m) {
			return nil
		}
	}
	return first
}

// WaitAgree waits until all running nodes hold equal maps that satisfy cond
// (nil: any) and returns the map.
func (c *Cluster) WaitAgree(timeout time.Duration, cond func(*router.Map) bool, msg string) *router.Map {
	c.t.Helper()
	var m *router.Map
	WaitFor(c.t, timeout, func() bool {
		m = c.Agreed()
		return m != nil && (cond == nil || cond(m))
	}, "all nodes to agree on a map with "+msg)
	return m
}

// WaitActive waits until the running nodes agree on a map with exactly
// want nodes, all active, min(want, MaxVoters) of them Raft voters (a
// joining node is promoted once Raft has reached it), and a leader.
func (c *Cluster) WaitActive(timeout time.Duration, want int) *router.Map {
	c.t.Helper()
	c.mu.Lock()
	voters := min(want, c.cfgs[0].MaxVoters)
	c.mu.Unlock()
	return c.WaitAgree(timeout, func(m *router.Map) bool {
		if len(m.Nodes) != want || c.Leader() < 0 {
			return false
		}
		v := 0
		for _, n := range m.Nodes {
			if n.State != router.NodeActive {
				return false
			}
			if n.Voter {
				v++
			}
		}
		return v == voters
	}, fmt.Sprintf("%d active nodes, %d voters", want, voters))
}

// Apply commits cmd through any running node.
func (c *Cluster) Apply(ctx context.Context, cmd router.Command) error {
	r := c.Running()
	if len(r) == 0 {
		return cluster.ErrStopped
	}
	return c.Node(r[len(r)-1]).Apply(ctx, cmd)
}

// LoopbackIP is this process's own loopback address. On Linux, where all of
// 127.0.0.0/8 is loopback, it is one picked at random per process, so that
// test processes running side by side (go test runs packages in parallel)
// never share a port space: a node killed in one process gets its ports back
// when it restarts, instead of finding them taken by another process's node
// or outgoing connection (both of those use 127.0.0.1), and a Raft leader
// still calling a killed node's port cannot reach another test's cluster.
// Elsewhere, or if the address cannot be bound, it is 127.0.0.1.
func LoopbackIP() string {
	loopbackOnce.Do(func() {
		loopbackIP = "127.0.0.1"
		if runtime.GOOS != "linux" {
			return
		}
		for range 8 {
			ip := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), 1+rand.IntN(254), 1+rand.IntN(254))
			l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
			if err != nil {
				continue
			}
			l.Close()
			loopbackIP = ip
			return
		}
	})
	return loopbackIP
}

var (
	loopbackOnce sync.Once
	loopbackIP   string
)

// FreeAddrs returns k distinct HOST:PORT addresses on LoopbackIP whose TCP
// and UDP ports were free a moment ago.
func FreeAddrs(t testing.TB, k int) []string {
	t.Helper()
	var out []string
	var hold []interface{ Close() error }
	defer func() {
		for _, h := range hold {
			h.Close()
		}
	}()
	for len(out) < k {
		l, err := net.Listen("tcp", net.JoinHostPort(LoopbackIP(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		hold = append(hold, l)
		u, err := net.ListenPacket("udp", l.Addr().String())
		if err != nil {
			continue // UDP side taken; try another
		}
		hold = append(hold, u)
		out = append(out, l.Addr().String())
	}
	return out
}

// logWriter sends log lines to t.Log until the test ends.
type logWriter struct {
	t      testing.TB
	mu     sync.Mutex
	closed bool
}

func newLogWriter(t testing.TB) *logWriter { return &logWriter{t: t} }

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *logWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
