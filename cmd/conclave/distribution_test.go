package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/router"
)

// TestModelDistribution runs 3 node processes of which only n0 has the
// model file; n1 and n2 start without --model, fetch the dense part and the
// experts the map places on them from n0 (verified chunk by chunk), and
// serve. Greedy completions through every node equal `conclave generate`
// on the file, and each fetching node holds far less than the whole file.
func TestModelDistribution(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs 3 serving processes")
	}
	testStart := time.Now()
	// CONCLAVE_DIST_PRESET=bench runs it on the bench shape (≈700 MB) for
	// docs/performance.md; the default demo shape is ≈16 MB.
	preset := cmp.Or(os.Getenv("CONCLAVE_DIST_PRESET"), "demo")
	modelPath := testmodel.Write(t, testmodel.Config(t, preset, nil))
	const prompt = "the quick brown fox jumps over the lazy dog"
	const maxTokens = 16
	ref := generate(t, "--model", modelPath, "--prompt", prompt, "--max-tokens", fmt.Sprint(maxTokens), "--ignore-eos", "--threads", "1")

	pc := startProcClusterEach(t, 3, func(i int) []string {
		if i == 0 {
			return []string{"--model", modelPath}
		}
		return nil
	}, "--dead-grace", "60s", "--replication", "1", "--threads", "1")
	addrs := pc.addrs
	started := time.Now() // every process is running, n0 answers HTTP
	ac := &cluster.AdminClient{Base: "http://" + addrs[0][0]}
	client := &http.Client{Timeout: 60 * time.Second}

	// Settled: every expert has exactly one replica, ready, and both
	// fetching nodes host some.
	last := ""
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last placement: %s", last)
		}
	})
	settled := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := ac.Experts(ctx)
		if err != nil || r.Model == nil {
			last = fmt.Sprintf("err=%v", err)
			return false
		}
		per := map[string]int{}
		notReady := 0
		for _, e := range r.Placement {
			for _, rep := range e.Replicas {
				per[rep.Node]++
				if !rep.Ready {
					notReady++
				}
			}
		}
		last = fmt.Sprintf("placed %d/%d, per node %v, not ready %d", len(r.Placement), r.Model.Layers*r.Model.Experts, per, notReady)
		return len(r.Placement) == r.Model.Layers*r.Model.Experts && notReady == 0 && per["n1"] > 0 && per["n2"] > 0 &&
			per["n0"]+per["n1"]+per["n2"] == len(r.Placement)
	}
	clustertest.WaitFor(t, 90*time.Second, settled, "every expert placed once and ready, n1 and n2 hosting")
	waitAllReady(t, client, pc)
	t.Logf("cluster settled %v after the processes started (%v since the test began): %s",
		time.Since(started).Round(time.Millisecond), time.Since(testStart).Round(time.Millisecond), last)
	for _, p := range pc.procs[1:] {
		for _, line := range strings.Split(p.out.String(), "\n") {
			if strings.Contains(line, "fetched") {
				t.Logf("%s: %s", p.id, line)
			}
		}
	}

	// What each node holds: n0 the whole file, n1 and n2 at least the
	// dense part plus their experts, and much less than the file.
	gf, err := gguf.Open(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	lay, err := cluster.LayoutOf(gf)
	gf.Close()
	if err != nil {
		t.Fatal(err)
	}
	span := func(rs []cluster.ByteRange) (n int64) {
		for _, r := range rs {
			n += r.Len
		}
		return n
	}
	dense := span(lay.Dense)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exp, err := ac.Experts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var firstN2 *cluster.ModelFileStatus
	for i, a := range addrs {
		id := fmt.Sprintf("n%d", i)
		st, err := (&cluster.AdminClient{Base: "http://" + a[0]}).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f := st.ModelFile
		if f == nil {
			t.Fatalf("%s reports no model file", id)
		}
		var hosted int64
		nexp := 0
		for _, e := range exp.Placement {
			for _, r := range e.Replicas {
				if r.Node == id {
					hosted += span(lay.Experts[e.Expert])
					nexp++
				}
			}
		}
		t.Logf("%s: %s, held %d/%d chunks = %.2f MiB of %.2f MiB, fetched %.2f MiB, rejected %d; dense %.2f MiB + %d hosted experts %.2f MiB",
			id, f.State, f.HeldChunks, f.Chunks, mib(f.HeldBytes), mib(f.Size), mib(f.FetchedBytes), f.Rejected, mib(dense), nexp, mib(hosted))
		if i == 2 {
			firstN2 = f
		}
		if i == 0 {
			if f.State != "held" {
				t.Errorf("n0 model file %q, want held", f.State)
			}
			continue
		}
		if f.State != "partial" || f.HeldBytes < dense+hosted || f.FetchedBytes >= f.Size || f.HeldBytes >= f.Size {
			t.Errorf("%s: %+v: want partial, held ≥ dense+hosted (%d) and less than the file", id, f, dense+hosted)
		}
	}
	var out, errOut bytes.Buffer
	if err := cmdCluster([]string{"status", "--addr", addrs[1][0]}, &out, &errOut); err != nil && !errors.Is(err, errUnhealthy) {
		t.Fatal(err)
	}
	t.Logf("conclave cluster status:\n%s", out.String())
	if !strings.Contains(out.String(), "held") || !strings.Contains(out.String(), "partial") {
		t.Errorf("cluster status shows no held/partial model file column")
	}

	// Greedy output through every node equals the single-process one.
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	complete := func(i int, a []string) {
		t.Helper()
		resp, err := client.Get("http://" + a[0] + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&models)
		resp.Body.Close()
		if err != nil || len(models.Data) != 1 {
			t.Fatalf("n%d /v1/models: %v %+v", i, err, models)
		}
		body, _ := json.Marshal(map[string]any{"model": models.Data[0].ID, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0, "ignore_eos": true})
		t0 := time.Now()
		resp, err = client.Post("http://"+a[0]+"/v1/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var cr struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &cr) != nil || len(cr.Choices) != 1 {
			t.Fatalf("n%d completion: %d %s", i, resp.StatusCode, b)
		}
		if cr.Choices[0].Text != ref.Text {
			t.Errorf("n%d greedy text %q, want conclave generate's %q", i, cr.Choices[0].Text, ref.Text)
		}
		t.Logf("n%d (%s) completion in %v: %q", i, models.Data[0].ID, time.Since(t0).Round(time.Millisecond), cr.Choices[0].Text)
	}
	for i, a := range addrs {
		complete(i, a)
	}

	// kill -9 n2 and restart it from its data dir: it resumes from the
	// chunks it had verified and fetches at most what it lacks.
	p := pc.procs[2]
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	restarted := time.Now()
	pc.start(p)
	clustertest.WaitFor(t, 90*time.Second, settled, "settled after n2's restart")
	waitAllReady(t, client, pc)
	st, err := (&cluster.AdminClient{Base: "http://" + addrs[2][0]}).Status(ctx)
	if err != nil || st.ModelFile == nil {
		t.Fatalf("n2 status after restart: %v %+v", err, st.ModelFile)
	}
	f := st.ModelFile
	t.Logf("n2 restarted, settled in %v: held %.2f MiB, fetched %.2f MiB this run (first run fetched %.2f MiB)",
		time.Since(restarted).Round(time.Millisecond), mib(f.HeldBytes), mib(f.FetchedBytes), mib(firstN2.FetchedBytes))
	if f.HeldBytes < firstN2.HeldBytes || f.FetchedBytes >= firstN2.FetchedBytes {
		t.Errorf("n2 after restart holds %d bytes (had %d) and fetched %d (first run %d): want its chunks kept, not fetched again",
			f.HeldBytes, firstN2.HeldBytes, f.FetchedBytes, firstN2.FetchedBytes)
	}
	complete(2, addrs[2])
	t.Logf("total %v", time.Since(testStart).Round(time.Millisecond))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// TestRestartWithoutModelHolder: the only node with the whole model file
// dies; a fetching node restarted after that serves from the chunks its
// data dir holds. It used to wait for a node with the whole file before it
// loaded anything, so the file's node was a single point of failure for
// every restart.
func TestRestartWithoutModelHolder(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs 3 serving processes")
	}
	modelPath := testmodel.Write(t, testmodel.Config(t, "demo", nil))
	pc := startProcClusterEach(t, 3, func(i int) []string {
		if i == 0 {
			return []string{"--model", modelPath}
		}
		return nil
	}, "--dead-grace", "2s", "--replication", "2", "--threads", "1")
	client := &http.Client{Timeout: 60 * time.Second}
	ac := &cluster.AdminClient{Base: "http://" + pc.addrs[1][0]}
	// Every replica ready: n1 and n2 hold their experts' chunks.
	clustertest.WaitFor(t, 90*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := ac.Experts(ctx)
		if err != nil || r.Model == nil || len(r.Placement) != r.Model.Layers*r.Model.Experts {
			return false
		}
		for _, e := range r.Placement {
			for _, rep := range e.Replicas {
				if !rep.Ready {
					return false
				}
			}
		}
		return true
	}, "every replica ready")
	waitAllReady(t, client, pc)
	kill := func(p *nodeProc) {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	kill(pc.procs[0])
	waitNodeStates(t, ac, 30*time.Second, func(m map[string]cluster.NodeStatus) bool { return m["n0"].State == router.NodeDead },
		"n0 dead in the map")
	p := pc.procs[2]
	kill(p)
	restarted := time.Now()
	pc.start(p)
	clustertest.WaitFor(t, 60*time.Second, func() bool {
		resp, err := client.Get("http://" + pc.addrs[2][0] + "/ready")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "n2 ready with no node holding the whole file")
	t.Logf("n2 ready %v after its restart, with n0 (the file's only holder) dead", time.Since(restarted).Round(time.Millisecond))
	body, _ := json.Marshal(map[string]any{"model": servedModel(t, client, pc.addrs[2][0]), "prompt": "the quick brown fox", "max_tokens": 8, "temperature": 0})
	resp, err := client.Post("http://"+pc.addrs[2][0]+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("completion through n2: %d %s", resp.StatusCode, b)
	}
}

// TestFetchingNodeMemoryLimit: a node that fetches its model counts the
// model's dense weights and its engine's KV pool and step buffers against
// --memory-limit, as a node started with the file does: with room, its
// gossiped expert capacity shrinks by them once it serves; without, it
// stops with an error that names the limit instead of allocating past it.
func TestFetchingNodeMemoryLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs 3 processes")
	}
	modelPath := synthModel(t)
	_, w := testmodel.Open(t, modelPath)
	const limit = 1 << 30
	pc := newProcClusterEach(t, 3, func(i int) []string {
		switch i {
		case 0:
			return []string{"--model", modelPath}
		case 2: // room for the runtime reserve and 1 MiB: not for the model
			return []string{"--memory-limit", fmt.Sprint(cluster.DefaultRuntimeReserve + 1<<20)}
		}
		return nil
	}, "--memory-limit", fmt.Sprint(limit), "--threads", "1")
	pc.start(pc.procs[0])
	waitHTTP(t, pc.addrs[0][0])
	pc.start(pc.procs[1])
	ac := &cluster.AdminClient{Base: "http://" + pc.addrs[0][0]}
	// Before it has the model, n1 gossips limit − reserve; serving, less
	// the model's dense weights and more (the KV pool and step buffers).
	noModel := int64(limit - cluster.DefaultRuntimeReserve)
	waitNodeStates(t, ac, 60*time.Second, func(m map[string]cluster.NodeStatus) bool {
		n, ok := m["n1"]
		return ok && n.Capacity > 0 && n.Capacity < noModel-w.DenseBytes()
	}, "n1's capacity to take off the fetched model's dense weights and serving memory")
	pc.start(pc.procs[2])
	select {
	case err := <-pc.procs[2].done:
		out := pc.procs[2].out.String()
		if err == nil || !strings.Contains(out, "memory limit leaves no room") || !strings.Contains(out, "--memory-limit") {
			t.Fatalf("n2 exited with %v, want an error naming the memory limit; output:\n%s", err, out)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("n2 still runs with a memory limit that cannot hold the model; output:\n%s", pc.procs[2].out.String())
	}
}
