package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/bench/membw"
	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/synth"
)

// memoryModel is the model TestMemoryLimitedPlacement serves: 4 layers × 8
// F32 experts of 24 MiB (768 MiB of experts) around 14 MiB of dense
// weights. F32 synthesizes fastest per byte; the experts are large enough
// that the process's own memory (~50–60 MiB: Go heap, binary text,
// buffers) fits the 20% margin the test allows with room to spare (with
// 18 MiB experts it took 98–100% of the bound).
func memoryModel(c *synth.Config) {
	c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFN, c.Experts, c.TopK, c.Vocab, c.Ctx = 512, 4, 8, 4, 4096, 8, 2, 512, 256
	c.Type = kernels.F32
	c.Name = "conclave-synth-memory"
}

// procStatus reads the VmRSS, RssAnon and RssFile lines of
// /proc/<pid>/status, in bytes.
func procStatus(pid int) (rss, anon, file int64, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, 0, err
	}
	rss, ok := membw.StatusField(string(b), "VmRSS")
	if !ok {
		return 0, 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	anon, _ = membw.StatusField(string(b), "RssAnon")
	file, _ = membw.StatusField(string(b), "RssFile")
	return rss, anon, file, nil
}

// TestMemoryLimitedPlacement serves a model whose experts do not fit one
// node's --memory-limit with three node processes that together hold them,
// and checks that each process keeps resident only what it hosts:
// RSS ≤ 1.2 × (dense weights + hosted experts + KV pool + a full step's
// buffers, which the warm-up fills).
func TestMemoryLimitedPlacement(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs 3 serving processes on an 800 MB model")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to read resident memory")
	}
	testStart := time.Now()
	path := testmodel.Write(t, testmodel.Config(t, "tiny", memoryModel))
	_, w := testmodel.Open(t, path)
	synthesized := time.Since(testStart)

	ecfg := engine.DefaultConfig()
	ecfg.KVBytes = 4 << 20
	const kvFlag = "4MiB"
	kv := ecfg.KVPoolBytes(w)
	step := ecfg.StepBytes(w, 1) // --threads 1
	dense, experts := w.DenseBytes(), w.ExpertBytes()
	eb := w.FeedForward(0, 0).Bytes()
	total := w.Layers * w.Experts
	// Room for 21½ experts per node: one node cannot hold the 32, three
	// hold them all once and 31 of them twice (replication 2 wants 64).
	limit := dense + kv + step + cluster.DefaultRuntimeReserve + 21*eb + eb/2
	capacity := limit - dense - kv - step - cluster.DefaultRuntimeReserve
	if capacity >= experts || 3*capacity < experts {
		t.Fatalf("bad sizing: capacity %d per node, experts %d", capacity, experts)
	}
	t.Logf("model: %d experts × %.1f MiB = %.1f MiB, dense %.1f MiB; per node: --memory-limit %d (%.1f MiB), KV pool %.1f MiB, step buffers %.1f MiB, expert capacity %.1f MiB (%d experts); synthesized in %v",
		total, mb(eb), mb(experts), mb(dense), limit, mb(limit), mb(kv), mb(step), mb(capacity), capacity/eb, synthesized.Round(time.Millisecond))

	pc := newProcCluster(t, 3, "--model", path, "--memory-limit", strconv.FormatInt(limit, 10), "--kv-cache", kvFlag,
		"--replication", "2", "--threads", "1", "--dead-grace", "60s")
	ac := &cluster.AdminClient{Base: "http://" + pc.addrs[0][0]}
	client := &http.Client{Timeout: 60 * time.Second}
	var placed cluster.ExpertsReply
	readyExperts := func() (ready, placedOnce int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := ac.Experts(ctx)
		if err != nil || r.Model == nil {
			return 0, 0
		}
		placed = r
		m, err := ac.Map(ctx) // the nodes' states too: ready replicas count on serving nodes
		if err != nil {
			return 0, 0
		}
		ready, _ = cluster.ReadyExperts(m)
		return ready, len(r.Placement)
	}
	readyStatus := func(addr string) int {
		resp, err := client.Get("http://" + addr + "/ready")
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	// n0 alone holds 21 of the 32 experts: the rest stay unplaced, the
	// model is not ready, and the leader says so.
	pc.start(pc.procs[0])
	waitHTTP(t, pc.addrs[0][0])
	clustertest.WaitFor(t, 30*time.Second, func() bool {
		ready, once := readyExperts()
		return ready == int(capacity/eb) && once == int(capacity/eb)
	}, "n0 alone to host as many experts as its capacity allows")
	if code := readyStatus(pc.addrs[0][0]); code != http.StatusServiceUnavailable {
		t.Errorf("n0 alone: /ready %d, want 503 (experts unplaced)", code)
	}
	clustertest.WaitFor(t, 10*time.Second, func() bool {
		return strings.Contains(pc.procs[0].out.String(), "cannot place every expert once")
	}, "the leader to warn about unplaced experts")
	t.Logf("n0 alone: %d of %d experts placed and ready, /ready 503", len(placed.Placement), total)

	// With n1 and n2, every expert is placed and ready, and the nodes fill
	// their capacity toward the second replicas.
	pc.start(pc.procs[1])
	pc.start(pc.procs[2])
	wantReplicas := min(2*total, 3*int(capacity/eb))
	clustertest.WaitFor(t, 60*time.Second, func() bool {
		if ready, _ := readyExperts(); ready != total {
			return false
		}
		n := 0
		for _, pe := range placed.Placement {
			for _, r := range pe.Replicas {
				if r.Ready {
					n++
				}
			}
		}
		return n == wantReplicas
	}, fmt.Sprintf("every expert ready and %d replicas ready", wantReplicas))
	clustertest.WaitFor(t, 30*time.Second, func() bool {
		for _, a := range pc.addrs {
			if readyStatus(a[0]) != http.StatusOK {
				return false
			}
		}
		return true
	}, "/ready 200 on every node")
	t.Logf("model ready on 3 nodes %v after test start", time.Since(testStart).Round(time.Millisecond))

	// Each node gossips the capacity its memory limit leaves and hosts no
	// more; the map holds every expert at least once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	nodes, err := ac.Nodes(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	hosted := map[string]int{}
	for _, pe := range placed.Placement {
		for _, r := range pe.Replicas {
			hosted[r.Node]++
		}
	}
	for _, n := range nodes.Nodes {
		if n.Capacity != capacity {
			t.Errorf("%s gossips capacity %d, want %d", n.ID, n.Capacity, capacity)
		}
		if b := int64(hosted[n.ID]) * eb; b > n.Capacity {
			t.Errorf("%s hosts %d experts (%d bytes) > its capacity %d", n.ID, hosted[n.ID], b, n.Capacity)
		}
	}

	// Completions on every node route tokens through most experts.
	modelID := "conclave-synth-memory"
	prompts := []string{"the quick brown fox", "hello cluster, how are you", "tell me about the experts", "memory is finite"}
	for i, p := range prompts {
		for _, a := range pc.addrs {
			body, _ := json.Marshal(map[string]any{"model": modelID, "prompt": p, "max_tokens": 12, "temperature": 0, "ignore_eos": true})
			resp, err := client.Post("http://"+a[0]+"/v1/completions", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatalf("completion %d on %s: %v", i, a[0], err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("completion %d on %s: %d %s", i, a[0], resp.StatusCode, b)
			}
		}
	}

	// Resident memory per process against what it hosts (placement is
	// unchanged by the completions: no load reports move 1-row experts).
	before := hosted
	hosted = map[string]int{}
	readyExperts()
	for _, pe := range placed.Placement {
		for _, r := range pe.Replicas {
			hosted[r.Node]++
		}
	}
	if !maps.Equal(before, hosted) {
		t.Logf("placement changed during the completions: experts per node %v → %v", before, hosted)
	}
	for i, p := range pc.procs {
		rss, anon, file, err := procStatus(p.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		mapped, err := mappedRSS(p.cmd.Process.Pid, path)
		if err != nil {
			t.Fatal(err)
		}
		h := int64(hosted[p.id]) * eb
		bound := 1.2 * float64(dense+h+kv+step)
		fallbacks := metricValue(t, client, pc.addrs[i][0], `conclave:expert_dispatch_calls_total{kind="fallback"}`)
		t.Logf("%s: hosts %d experts (%.1f MiB); VmRSS %.1f MiB (file %.1f, anon %.1f; model file %.1f of its %.1f) vs 1.2 × (dense %.1f + hosted %.1f + KV %.1f + step %.1f) = %.1f MiB (%.0f%% of it); dispatch fallbacks %v",
			p.id, hosted[p.id], mb(h), mb(rss), mb(file), mb(anon), mb(mapped), mb(dense+experts), mb(dense), mb(h), mb(kv), mb(step), bound/(1<<20), 100*float64(rss)/bound, fallbacks)
		if float64(rss) > bound {
			t.Errorf("%s: VmRSS %d bytes > 1.2 × (dense %d + hosted %d + KV %d + step buffers %d) = %.0f", p.id, rss, dense, h, kv, step, bound)
		}
		// Of the model file, only dense weights and hosted experts (and the
		// partial pages at the edges of the others) are resident.
		if slack := int64(2 << 20); mapped > dense+h+slack {
			t.Errorf("%s: %d bytes of the model file resident > dense %d + hosted %d + %d", p.id, mapped, dense, h, slack)
		}
	}
	t.Logf("total %v", time.Since(testStart).Round(time.Millisecond))
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// mappedRSS sums the resident bytes (Rss in /proc/<pid>/smaps) of the
// process's mappings of the file at path.
func mappedRSS(pid int, path string) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "smaps"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	in := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			in = len(fields) >= 6 && fields[5] == path // a mapping's header line
		case in && len(fields) >= 2 && fields[0] == "Rss:":
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, err
			}
			total += kb << 10
		}
	}
	return total, s.Err()
}

// metricValue scrapes one sample (name with labels, as exposed) from a
// node's /metrics; -1 when absent.
func metricValue(t *testing.T, client *http.Client, addr, sample string) float64 {
	t.Helper()
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// A memory limit that leaves nothing for experts stops the node at start
// with the numbers.
func TestMemoryLimitTooSmall(t *testing.T) {
	path := testmodel.Write(t, testmodel.Config(t, "tiny", nil))
	a := clustertest.FreeAddrs(t, 4)
	var out bytes.Buffer
	err := cmdNode([]string{"--id", "m", "--data-dir", t.TempDir(), "--model", path, "--kv-cache", "1MiB", "--memory-limit", "32MiB",
		"--http-addr", a[0], "--gossip-addr", a[1], "--raft-addr", a[2], "--actor-addr", a[3], "--log-level", "error"}, &out, &out)
	if !errors.Is(err, cluster.ErrMemoryLimit) {
		t.Fatalf("err %v, want ErrMemoryLimit", err)
	}
	for _, want := range []string{"limit 32.0 MiB", "KV cache and step buffers", "runtime reserve 64.0 MiB", "--memory-limit"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
