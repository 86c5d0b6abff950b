package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

// TestModelLoad: `conclave model load F --addr …` against an in-process node
// that has F makes F's model live again after another model replaced it and
// waits until its experts are ready; a file no node has is refused.
func TestModelLoad(t *testing.T) {
	dir := t.TempDir()
	scfg, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tiny.gguf")
	if err := synth.Write(scfg, path); err != nil {
		t.Fatal(err)
	}
	scfg.Seed++
	otherPath := filepath.Join(dir, "other.gguf")
	if err := synth.Write(scfg, otherPath); err != nil {
		t.Fatal(err)
	}
	c := clustertest.New(t, 1, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.ModelPath = path
		cfg.Replication = 1
		return cfg
	}})
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	w, err := model.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(1)
	t.Cleanup(pool.Close)
	x, err := c.Node(0).StartExperts(w, pool, dispatch.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Close)
	clustertest.WaitFor(t, 10*time.Second, x.Ready, "experts ready")

	// Another model (no node has its file) replaces it, as a bad load could.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other := router.Model{ID: "other", Digest: strings.Repeat("cd", 32), Version: 1, Layers: 1, Experts: 2, TopK: 1, Live: true}
	if err := c.Apply(ctx, router.Command{Op: router.OpSetModel, Model: &other}); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 10*time.Second, func() bool { return !x.Ready() }, "not ready for the other model")

	addr := "http://" + c.Config(0).HTTPAddr
	load := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := cmdLoad(args, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	out, _, err := load(path, "--addr", addr, "--timeout", "30s")
	if err != nil || !strings.Contains(out, "model tiny is live") || !strings.Contains(out, "experts ready:") {
		t.Fatalf("model load: %v\n%s", err, out)
	}
	t.Logf("model load:\n%s", out)
	m := c.Node(0).Map()
	if m.Model == nil || m.Model.ID != "tiny" {
		t.Fatalf("live model: %+v", m.Model)
	}
	if r, n := cluster.ReadyExperts(m); r != n || n != scfg.Layers*scfg.Experts || !x.Ready() {
		t.Fatalf("after load: %d/%d experts ready, node ready %v", r, n, x.Ready())
	}

	// Loading it again is a no-op that still reports readiness, as JSON.
	out, progress, err := load("--json", "--addr", strings.TrimPrefix(addr, "http://"), path)
	if err != nil {
		t.Fatalf("model load --json: %v\n%s%s", err, out, progress)
	}
	var res struct {
		Model        router.Model `json:"model"`
		Hosts        []string     `json:"hosts"`
		ExpertsReady int          `json:"experts_ready"`
		Experts      int          `json:"experts"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Model.ID != "tiny" || res.ExpertsReady != res.Experts ||
		res.Experts == 0 || len(res.Hosts) != 1 || !strings.Contains(progress, "experts ready") {
		t.Fatalf("model load --json: %v\n%s\nstderr: %s", err, out, progress)
	}

	// No node has other.gguf.
	if _, _, err := load(otherPath, "--addr", addr); !errors.Is(err, cluster.ErrNoHost) {
		t.Errorf("load of a file no node has: %v", err)
	}
	if m := c.Node(0).Map(); m.Model == nil || m.Model.ID != "tiny" {
		t.Fatalf("live model after the refused load: %+v", m.Model)
	}
	if _, _, err := load("--addr", addr); !errors.Is(err, errUsage) {
		t.Errorf("load without a file: %v", err)
	}
	if _, _, err := load(filepath.Join(dir, "missing.gguf"), "--addr", addr); err == nil {
		t.Error("load of a missing file succeeded")
	}
}
