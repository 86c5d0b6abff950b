package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/router"
)

// run1 is the command line's entry point (main's run, which the tests
// below shadow).
var run1 = run

func TestClusterCommands(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mod := router.Model{ID: "cli-moe", Version: 1, Layers: 2, Experts: 4, TopK: 2, ExpertBytes: 1 << 20, Live: true}
	if err := c.Apply(ctx, router.Command{Op: router.OpSetModel, Model: &mod}); err != nil {
		t.Fatal(err)
	}
	c.WaitAgree(10*time.Second, func(m *router.Map) bool { return len(m.Placement) == 8 }, "8 experts placed")
	addr := "http://" + c.Config(1).HTTPAddr
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := cmdCluster(append(args, "--addr", addr), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	// No replica has loaded its expert (no engines here): degraded, exit 3.
	out, err := run("status")
	if !errors.Is(err, errUnhealthy) || !strings.Contains(out, "no ready replica") || !strings.Contains(out, "n2") {
		t.Fatalf("status before the replicas are ready: %v, want errUnhealthy\n%s", err, out)
	}
	var stdout, stderr bytes.Buffer
	if code := run1([]string{"cluster", "status", "--addr", addr}, &stdout, &stderr); code != 3 {
		t.Errorf("conclave cluster status on a degraded cluster exited %d, want 3 (%s)", code, stderr.String())
	}
	for _, pe := range c.Agreed().PlacementList() {
		for _, r := range pe.Replicas {
			id := pe.Expert
			if err := c.Apply(ctx, router.Command{Op: router.OpSetReplicaReady, Expert: &id, NodeID: r.Node, Ready: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.WaitMap(1, 10*time.Second, func(m *router.Map) bool {
		for _, pe := range m.PlacementList() {
			if !slices.ContainsFunc(pe.Replicas, func(r router.Replica) bool { return r.Ready }) {
				return false
			}
		}
		return true
	}, "every expert ready on node 1")
	out, err = run("status")
	if err != nil || !strings.Contains(out, "health       ok") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	t.Logf("status:\n%s", out)
	out, err = run("nodes", "--json")
	var nr cluster.NodesReply
	if err != nil || json.Unmarshal([]byte(out), &nr) != nil || len(nr.Nodes) != 3 {
		t.Fatalf("nodes --json: %v\n%s", err, out)
	}
	out, err = run("experts")
	if err != nil || strings.Count(out, "\n") < 10 {
		t.Fatalf("experts: %v\n%s", err, out)
	}
	t.Logf("experts:\n%s", out)
	out, err = run("rebalance")
	if err != nil || !strings.Contains(out, "rebalanced") {
		t.Fatalf("rebalance: %v\n%s", err, out)
	}
	if _, err := run("drain", "nope"); !errors.Is(err, router.ErrUnknownNode) {
		t.Errorf("drain unknown node: %v", err)
	}
	out, err = run("drain", "n2", "--timeout", "15s")
	if err != nil || !strings.Contains(out, "n2 drained") {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	if _, err := run("frobnicate"); !errors.Is(err, errUsage) {
		t.Errorf("unknown subcommand: %v", err)
	}
	if _, err := run("drain"); !errors.Is(err, errUsage) {
		t.Errorf("drain without node: %v", err)
	}
	for _, d := range []string{"0", "-1s"} {
		if _, err := run("status", "--timeout", d); !errors.Is(err, errUsage) {
			t.Errorf("status --timeout %s: %v, want a usage error", d, err)
		}
	}
}

func TestInitTLSCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	var out bytes.Buffer
	if err := cmdCluster([]string{"init-tls", "--dir", dir, "--nodes", "a,b"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "ca.key", "a.crt", "a.key", "b.crt", "b.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if err := cmdCluster([]string{"init-tls"}, &out, &out); !errors.Is(err, errUsage) {
		t.Errorf("init-tls without --dir: %v", err)
	}
}
