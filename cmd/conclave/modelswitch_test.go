package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

// TestModelSwitch: the documented way to change a cluster's model. n0
// holds model A and n1 fetched its part of A; n2 joins with model B (same
// shape). `model load B` makes B live: placement gives B's experts to the
// node that runs B only, which becomes ready and answers as B does; the
// nodes still running A refuse to generate (their weights are not B's)
// instead of mixing A's dense weights with B's experts; and n1, restarted
// without --model, catches up with the map, fetches B and answers as B.
func TestModelSwitch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs 3 serving processes")
	}
	a := testmodel.Write(t, testmodel.Config(t, "demo", nil))
	b := testmodel.Write(t, testmodel.Config(t, "demo", func(c *synth.Config) { c.Seed = 7 }))
	const prompt, maxTokens = "the quick brown fox", 12
	refB := generate(t, "--model", b, "--prompt", prompt, "--max-tokens", fmt.Sprint(maxTokens), "--ignore-eos", "--threads", "1").Text
	if refA := generate(t, "--model", a, "--prompt", prompt, "--max-tokens", fmt.Sprint(maxTokens), "--ignore-eos", "--threads", "1").Text; refA == refB {
		t.Fatalf("models A and B answer alike (%q): the test cannot tell them apart", refA)
	}
	pc := newProcClusterEach(t, 3, func(i int) []string {
		switch i {
		case 0:
			return []string{"--model", a}
		case 2:
			return []string{"--model", b}
		}
		return nil
	}, "--dead-grace", "60s", "--replication", "1", "--threads", "1")
	client := &http.Client{Timeout: time.Minute}
	ready := func(i int) bool {
		resp, err := client.Get("http://" + pc.addrs[i][0] + "/ready")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	pc.start(pc.procs[0])
	waitHTTP(t, pc.addrs[0][0])
	pc.start(pc.procs[1])
	clustertest.WaitFor(t, 60*time.Second, func() bool { return ready(0) && ready(1) }, "n0 and n1 ready with model A")
	pc.start(pc.procs[2]) // joins a cluster whose model is A, with B
	waitHTTP(t, pc.addrs[2][0])
	// As n2 sees it: model load, sent to n2, checks the holders in its map.
	ac := &cluster.AdminClient{Base: "http://" + pc.addrs[2][0]}
	waitNodeStates(t, ac, 30*time.Second, func(m map[string]cluster.NodeStatus) bool { return m["n2"].State == router.NodeActive },
		"n2 in the cluster")

	// Before the load n2 runs the next model: the status names it, and
	// says how to make its model live.
	clustertest.WaitFor(t, 30*time.Second, func() bool {
		st, err := ac.Status(t.Context())
		return err == nil && st.Health == "degraded" && slices.ContainsFunc(st.Problems, func(p string) bool {
			return strings.Contains(p, "node n2 runs model") && strings.Contains(p, "model load")
		})
	}, "the cluster's health naming n2, which runs the next model")
	mustCLI(t, "model", "load", b, "--addr", "http://"+pc.addrs[2][0], "--timeout", "60s")
	clustertest.WaitFor(t, 30*time.Second, func() bool { return ready(2) }, "n2 ready with model B")
	model := servedModel(t, client, pc.addrs[2][0])
	if got := completeGreedy(t, client, pc.addrs[2][0], model, prompt, maxTokens); got != refB {
		t.Errorf("n2 after model load: %q, want model B's %q", got, refB)
	}
	for _, i := range []int{0, 1} {
		body, _ := json.Marshal(map[string]any{"model": model, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0})
		resp, err := client.Post("http://"+pc.addrs[i][0]+"/v1/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(out, []byte("model_not_live")) {
			t.Errorf("n%d still runs model A: %d %s, want 503 model_not_live", i, resp.StatusCode, out)
		}
	}
	// What operators and load balancers see of n0, which runs model A from
	// its file: /ready says model_not_live (not "loading", a wait that
	// would never end), the cluster's health names it, and the status
	// table does not show its file as the live model's.
	if resp, err := client.Get("http://" + pc.addrs[0][0] + "/ready"); err != nil {
		t.Fatal(err)
	} else {
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(out, []byte(`"status":"model_not_live"`)) {
			t.Errorf("n0 /ready: %d %s, want 503 model_not_live", resp.StatusCode, out)
		}
	}
	clustertest.WaitFor(t, 30*time.Second, func() bool {
		st, err := ac.Status(t.Context())
		return err == nil && st.Health == "degraded" && slices.ContainsFunc(st.Problems, func(p string) bool {
			return strings.Contains(p, "node n0 runs model") && strings.Contains(p, "restart it")
		})
	}, "the cluster's health naming n0, which runs model A")
	out, _, code := cli(t, "cluster", "status", "--addr", "http://"+pc.addrs[2][0])
	if code != 3 || !regexp.MustCompile(`(?m)^n0 .*other model`).MatchString(out) || !regexp.MustCompile(`(?m)^n2 .*held`).MatchString(out) {
		t.Errorf("cluster status (exit %d):\n%s\nwant exit 3, n0's file shown as another model's, n2's held", code, out)
	}

	// The recovery the docs give: restart the fetching node without --model.
	n1 := pc.procs[1]
	n1.cmd.Process.Kill()
	<-n1.done
	pc.start(n1)
	clustertest.WaitFor(t, 60*time.Second, func() bool { return ready(1) }, "n1, restarted, ready with model B")
	if got := completeGreedy(t, client, pc.addrs[1][0], model, prompt, maxTokens); got != refB {
		t.Errorf("n1 after its restart: %q, want model B's %q", got, refB)
	}
}
