package cluster_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/internal/testmodel"
)

func TestMemoryBudget(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    cluster.MemoryBudget
		want int64
		err  string // substring of the error; "" means none
	}{
		{"room left", cluster.MemoryBudget{Limit: 1000, Dense: 100, Serving: 200, Reserve: 300}, 400, ""},
		{"nothing left", cluster.MemoryBudget{Limit: 600, Dense: 100, Serving: 200, Reserve: 300}, 0, "= 0.0 MiB (0 B)"},
		{"overdrawn", cluster.MemoryBudget{Limit: 256 << 20, Dense: 100 << 20, Serving: 128 << 20, Reserve: 64 << 20}, 0,
			"limit 256.0 MiB (268435456 B) − dense weights 100.0 MiB (104857600 B) − KV cache and step buffers 128.0 MiB (134217728 B) − runtime reserve 64.0 MiB (67108864 B) = -36.0 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.b.ExpertCapacity()
			switch {
			case tc.err == "" && (err != nil || got != tc.want):
				t.Errorf("ExpertCapacity() = %d, %v; want %d", got, err, tc.want)
			case tc.err != "" && (!errors.Is(err, cluster.ErrMemoryLimit) || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("ExpertCapacity() error %v, want cluster.ErrMemoryLimit containing %q", err, tc.err)
			}
		})
	}
}

// A node started with a memory limit gossips limit − dense − serving −
// reserve as its capacity, and refuses to start when that is ≤ 0.
func TestStartMemoryLimit(t *testing.T) {
	path := testmodel.Write(t, testmodel.Config(t, "tiny", nil))
	_, w := testmodel.Open(t, path)
	dense := w.DenseBytes()
	cfg := func(limit int64) cluster.Config {
		c := cluster.DefaultConfig()
		a := clustertest.FreeAddrs(t, 4)
		c.ID, c.DataDir, c.ModelPath = "m0", filepath.Join(t.TempDir(), "m0"), path
		c.HTTPAddr, c.GossipAddr, c.RaftAddr, c.ActorAddr = a[0], a[1], a[2], a[3]
		c.MemoryLimitBytes, c.ServingBytes, c.RuntimeReserveBytes = limit, 1<<20, 2<<20
		c.NoActorRemote = true
		c.Logger = cluster.NewLogger("m0", testWriter{t}, "warn")
		return c
	}
	if _, err := cluster.Start(cfg(dense + 3<<20)); !errors.Is(err, cluster.ErrMemoryLimit) {
		t.Fatalf("Start with no room left: %v, want cluster.ErrMemoryLimit", err)
	}
	n, err := cluster.Start(cfg(dense + 3<<20 + 5*w.FeedForward(0, 0).Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Kill()
	clustertest.WaitFor(t, 10*time.Second, func() bool {
		nd, ok := n.Map().Nodes["m0"]
		return ok && nd.Capacity == 5*w.FeedForward(0, 0).Bytes()
	}, "the node's capacity in the map to be 5 experts")
}

// A node started without a model (it will fetch one) gossips limit −
// reserve; AccountServing takes the fetched model's dense weights and the
// engine's serving memory off it, as Start does for a node with the file,
// and refuses a model that leaves no room. With --capacity it changes
// nothing.
func TestAccountServing(t *testing.T) {
	start := func(id string, limit, capacity int64) *cluster.Node {
		c := cluster.DefaultConfig()
		a := clustertest.FreeAddrs(t, 4)
		c.ID, c.DataDir = id, filepath.Join(t.TempDir(), id)
		c.HTTPAddr, c.GossipAddr, c.RaftAddr, c.ActorAddr = a[0], a[1], a[2], a[3]
		c.MemoryLimitBytes, c.CapacityBytes, c.RuntimeReserveBytes = limit, capacity, 2<<20
		c.NoActorRemote = true
		c.Logger = cluster.NewLogger(id, testWriter{t}, "warn")
		n, err := cluster.Start(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Kill)
		return n
	}
	capacity := func(n *cluster.Node, want int64, what string) {
		t.Helper()
		clustertest.WaitFor(t, 10*time.Second, func() bool {
			nd, ok := n.Map().Nodes[n.ID()]
			return ok && nd.Capacity == want
		}, what)
	}
	n := start("f0", 100<<20, 0)
	capacity(n, 98<<20, "the capacity before the model to be limit − reserve")
	got, err := n.AccountServing(30<<20, 20<<20)
	if err != nil || got != 48<<20 {
		t.Fatalf("AccountServing = %d, %v; want %d", got, err, 48<<20)
	}
	capacity(n, 48<<20, "the capacity with the model to be limit − dense − serving − reserve")
	if _, err := n.AccountServing(60<<20, 40<<20); !errors.Is(err, cluster.ErrMemoryLimit) {
		t.Fatalf("AccountServing with no room left: %v, want cluster.ErrMemoryLimit", err)
	}
	fixed := start("f1", 0, 77<<20)
	if got, err := fixed.AccountServing(30<<20, 20<<20); err != nil || got != 77<<20 {
		t.Fatalf("AccountServing with --capacity = %d, %v; want it unchanged (%d)", got, err, 77<<20)
	}
}
