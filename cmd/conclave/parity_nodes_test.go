package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/internal/testmodel"
)

// waitAllReady waits until every node answers /ready with 200.
func waitAllReady(t *testing.T, client *http.Client, pc *procCluster) {
	t.Helper()
	clustertest.WaitFor(t, 60*time.Second, func() bool {
		for _, a := range pc.addrs {
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
	}, "every node ready")
}

// servedModel returns the model id a node's /v1/models lists first.
func servedModel(t *testing.T, client *http.Client, addr string) string {
	t.Helper()
	resp, err := client.Get("http://" + addr + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var models struct {
		Data []struct{ ID string } `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&models); err != nil || len(models.Data) == 0 {
		t.Fatalf("/v1/models on %s: %v %+v", addr, err, models)
	}
	return models.Data[0].ID
}

// completeGreedy returns a node's greedy completion of prompt.
func completeGreedy(t *testing.T, client *http.Client, addr, model, prompt string, maxTokens int) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": model, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0, "ignore_eos": true})
	resp, err := client.Post("http://"+addr+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var cr struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &cr) != nil || len(cr.Choices) != 1 {
		t.Fatalf("completion on %s: %d %s", addr, resp.StatusCode, b)
	}
	return cr.Choices[0].Text
}

// TestParityNodeCounts: the same greedy completions on clusters of 1, 2 and
// 3 node processes (replication 1, so the experts a node computes are
// spread over the others), asked of every node, equal `conclave generate`
// on the file.
func TestParityNodeCounts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs up to 3 serving processes")
	}
	path := testmodel.Write(t, testmodel.Config(t, "demo", nil))
	prompts := []string{"the quick brown fox jumps over the lazy dog", "once upon a time"}
	const maxTokens = 24
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = generate(t, "--model", path, "--prompt", p, "--max-tokens", fmt.Sprint(maxTokens), "--ignore-eos").Text
	}
	client := &http.Client{Timeout: time.Minute}
	for n := 1; n <= 3; n++ {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			pc := startProcCluster(t, n, "--model", path, "--replication", "1", "--threads", "1")
			waitAllReady(t, client, pc)
			model := servedModel(t, client, pc.addrs[0][0])
			for i, a := range pc.addrs {
				for j, p := range prompts {
					if got := completeGreedy(t, client, a[0], model, p, maxTokens); got != want[j] {
						t.Errorf("n%d prompt %d: %q, want conclave generate's %q", i, j, got, want[j])
					}
				}
				calls := dispatchCallsOf(client, a[0])
				t.Logf("n%d expert calls: %v", i, calls)
				if n > 1 && (calls["remote"] == 0 || calls["fallback"] != 0) {
					t.Errorf("n%d: want remote expert calls and no fallback with %d nodes: %v", i, n, calls)
				}
			}
			for _, p := range pc.procs {
				p.cmd.Process.Kill()
				<-p.done
			}
		})
	}
}
