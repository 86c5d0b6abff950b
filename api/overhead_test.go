package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestAPIOverhead measures what the HTTP API adds to a short generation:
// the same requests (chat prompt, 4 greedy tokens) run alternately through
// the engine directly and through the API over loopback HTTP, in one
// process on the tiny model, and the latency percentiles are compared.
// It reports the numbers; it fails only on a gross regression (the goal is
// under 2 ms at p99), since shared CI machines are noisy.
func TestAPIOverhead(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("a measurement: not with -short or -race")
	}
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	f := newFixture(t, cfg, nil)
	const n, maxTokens = 200, 4
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Tell me about the cluster"}],"max_tokens":%d,"temperature":0,"ignore_eos":true}`, f.id, maxTokens)
	prompt, e := chatPrompt(f.tok, tokMsgs("user", "Tell me about the cluster"))
	if e != nil {
		t.Fatal(e)
	}
	client := f.http.Client()
	direct := func() time.Duration {
		start := time.Now()
		ch, err := f.eng.Submit(context.Background(), testRequest(prompt, maxTokens))
		if err != nil {
			t.Fatal(err)
		}
		for range ch {
		}
		return time.Since(start)
	}
	viaAPI := func() time.Duration {
		start := time.Now()
		resp, err := client.Post(f.http.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return time.Since(start)
	}
	for range 20 { // warm up: connections, prefix cache, template compile
		direct()
		viaAPI()
	}
	var d, a []time.Duration
	for range n {
		d = append(d, direct())
		a = append(a, viaAPI())
	}
	pct := func(x []time.Duration, p float64) time.Duration {
		s := slices.Clone(x)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	t.Logf("%d requests of %d tokens: direct p50 %v p99 %v; API p50 %v p99 %v; overhead p50 %v p99 %v",
		n, maxTokens, pct(d, .5), pct(d, .99), pct(a, .5), pct(a, .99),
		pct(a, .5)-pct(d, .5), pct(a, .99)-pct(d, .99))
	// The goal (< 2 ms at p99) is measured and reported from the log line
	// above; the test only guards against a gross regression, at the
	// median: p99 of 200 samples is the second largest, which two
	// scheduler stalls on a loaded machine decide.
	if over := pct(a, .5) - pct(d, .5); over > 20*time.Millisecond {
		t.Errorf("API overhead at the median is %v", over)
	}
}
