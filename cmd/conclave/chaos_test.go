package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/router"
)

// chaosResult is one completion request's outcome.
type chaosResult struct {
	status  int
	text    string
	body    string
	err     error
	latency time.Duration
}

// TestChaosKillNonHome runs 3 serving node processes with replication 2 and,
// while greedy completions stream to node 0, kills -9 another node; every
// request must still succeed with the reference output.
func TestChaosKillNonHome(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs 3 serving processes")
	}
	testStart := time.Now()
	modelPath := testmodel.Write(t, testmodel.Config(t, "tiny", nil))
	pc := startProcCluster(t, 3, "--dead-grace", "60s", "--model", modelPath, "--replication", "2", "--threads", "1")
	procs, addrs, start := pc.procs, pc.addrs, pc.start
	ac := &cluster.AdminClient{Base: "http://" + addrs[0][0]}
	client := &http.Client{Timeout: 60 * time.Second}

	nodes := func() (map[string]cluster.NodeStatus, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := ac.Nodes(ctx)
		if err != nil {
			return nil, err
		}
		m := map[string]cluster.NodeStatus{}
		for _, n := range r.Nodes {
			m[n.ID] = n
		}
		return m, nil
	}
	allActive := func() bool {
		m, err := nodes()
		if err != nil || len(m) != 3 {
			return false
		}
		for _, n := range m {
			if n.State != router.NodeActive {
				return false
			}
		}
		return true
	}
	// expertsReady: every expert of the model has 2 ready replicas on
	// distinct nodes; it returns a summary for logging.
	lastExperts := ""
	expertsReady := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := ac.Experts(ctx)
		if err != nil || r.Model == nil {
			lastExperts = fmt.Sprintf("err=%v model=%v", err, r.Model)
			return false
		}
		want := r.Model.Layers * r.Model.Experts
		ok := len(r.Placement) == want
		short := 0
		for _, e := range r.Placement {
			ready := map[string]bool{}
			for _, rep := range e.Replicas {
				if rep.Ready {
					ready[rep.Node] = true
				}
			}
			if len(ready) < 2 {
				ok = false
				short++
			}
		}
		lastExperts = fmt.Sprintf("replication=%d placed=%d/%d under-replicated=%d", r.Replication, len(r.Placement), want, short)
		return ok
	}
	readyAll := func() bool {
		for _, a := range addrs {
			resp, err := client.Get("http://" + a[0] + "/ready")
			if err != nil {
				return false
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	}
	waitSettled := func(what string) time.Duration {
		t.Helper()
		t0 := time.Now()
		clustertest.WaitFor(t, 45*time.Second, allActive, what+": 3 active nodes")
		clustertest.WaitFor(t, 45*time.Second, expertsReady, what+": every expert with 2 ready replicas (last: "+lastExperts+")")
		clustertest.WaitFor(t, 45*time.Second, readyAll, what+": /ready 200 on every node")
		return time.Since(t0)
	}
	d := waitSettled("startup")
	t.Logf("cluster settled %v after start (%s); %v since test start", d.Round(time.Millisecond), lastExperts, time.Since(testStart).Round(time.Millisecond))

	// The model id the API serves.
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	resp, err := client.Get("http://" + addrs[0][0] + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&models)
	resp.Body.Close()
	if err != nil || len(models.Data) == 0 {
		t.Fatalf("/v1/models: %v %+v", err, models)
	}
	modelID := models.Data[0].ID

	const prompt = "the quick brown fox jumps over the lazy dog"
	const maxTokens = 24
	complete := func() chaosResult {
		body, _ := json.Marshal(map[string]any{"model": modelID, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0, "ignore_eos": true})
		t0 := time.Now()
		resp, err := client.Post("http://"+addrs[0][0]+"/v1/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			return chaosResult{err: err, latency: time.Since(t0)}
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res := chaosResult{status: resp.StatusCode, body: string(b), err: err, latency: time.Since(t0)}
		var cr struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if err == nil && resp.StatusCode == http.StatusOK {
			if jerr := json.Unmarshal(b, &cr); jerr != nil || len(cr.Choices) != 1 {
				res.err = fmt.Errorf("decode: %v (%d choices)", jerr, len(cr.Choices))
			} else {
				res.text = cr.Choices[0].Text
			}
		}
		return res
	}
	ref := complete()
	if ref.err != nil || ref.status != 200 {
		t.Fatalf("reference completion: status %d err %v body %s", ref.status, ref.err, ref.body)
	}
	t.Logf("reference (%v): %q", ref.latency.Round(time.Millisecond), ref.text)

	const perRound = 6
	for round, victim := range []int{1, 2, 1} {
		p := procs[victim]
		results := make([]chaosResult, 0, perRound)
		var mu sync.Mutex
		started := make(chan struct{})
		finished := make(chan struct{})
		var deadSeen atomic.Bool
		go func() {
			defer close(finished)
			// At least perRound requests, and keep going until the
			// victim is marked dead in the map so requests cover both the
			// window before detection and the one after it.
			for i := 0; i < perRound || !deadSeen.Load(); i++ {
				if i == 0 {
					close(started)
				}
				r := complete()
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
		<-started
		// Kill once the first request is in flight (about half a
		// reference latency in), so the kill lands mid-stream.
		killDelay := min(ref.latency/2, 2*time.Second)
		time.Sleep(killDelay)
		killed := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		var deadAfter time.Duration
		clustertest.WaitFor(t, 45*time.Second, func() bool {
			m, err := nodes()
			if err != nil {
				return false
			}
			if m[p.id].State == router.NodeDead {
				deadAfter = time.Since(killed)
				deadSeen.Store(true)
				return true
			}
			return false
		}, p.id+" marked dead")
		select {
		case <-finished:
		case <-time.After(90 * time.Second):
			t.Fatalf("round %d: requests did not finish within 90s of the kill", round+1)
		}
		var failures int
		var maxLat time.Duration
		for i, r := range results {
			maxLat = max(maxLat, r.latency)
			switch {
			case r.err != nil || r.status != 200:
				failures++
				t.Errorf("round %d (kill %s) request %d: status %d err %v latency %v body %s", round+1, p.id, i, r.status, r.err, r.latency, r.body)
			case r.text != ref.text:
				failures++
				t.Errorf("round %d (kill %s) request %d: text %q, want the reference %q", round+1, p.id, i, r.text, ref.text)
			}
		}
		if m, err := nodes(); err == nil {
			var sb strings.Builder
			for _, id := range []string{"n0", "n1", "n2"} {
				fmt.Fprintf(&sb, " %s=%s(experts %d)", id, m[id].State, m[id].Experts)
			}
			t.Logf("round %d map after requests:%s", round+1, sb.String())
		}
		t.Logf("round %d: killed %s %v after the first request started; requests %d, failures %d, max latency %v, marked dead %v after kill",
			round+1, p.id, killDelay.Round(time.Millisecond), len(results), failures, maxLat.Round(time.Millisecond), deadAfter.Round(time.Millisecond))
		if t.Failed() {
			expertsReady()
			t.Fatalf("round %d failed; experts: %s", round+1, lastExperts)
		}
		start(p)
		d := waitSettled(fmt.Sprintf("round %d restart of %s", round+1, p.id))
		t.Logf("round %d: %s restarted and cluster settled in %v (%v after kill)", round+1, p.id, d.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	}
	t.Logf("total %v", time.Since(testStart).Round(time.Millisecond))
}
