package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustRun(t *testing.T, c Config) *Report {
	t.Helper()
	rep, err := Run(context.Background(), c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// checkResults asserts the structure every successful result must have.
func checkResults(t *testing.T, l *Level) {
	t.Helper()
	for _, r := range l.Results {
		if !r.OK() {
			continue
		}
		if r.Chunks != r.MaxTokens || r.OutputTokens != r.MaxTokens {
			t.Errorf("%s request %d: %d chunks, %d output tokens, max_tokens %d", l.Name(), r.Index, r.Chunks, r.OutputTokens, r.MaxTokens)
		}
		if !(r.TTFTMs > 0 && r.TTFTMs <= r.E2EMs) || len(r.ITLMs) != r.Chunks-1 || r.TPOTMs < 0 || r.StartMs < 0 {
			t.Errorf("%s request %d: ttft %v e2e %v tpot %v itl %d start %v", l.Name(), r.Index, r.TTFTMs, r.E2EMs, r.TPOTMs, len(r.ITLMs), r.StartMs)
		}
		if !r.PromptReported || r.PromptTokens != r.PromptWords+promptOverhead {
			t.Errorf("%s request %d: prompt tokens %d (reported %v), words %d", l.Name(), r.Index, r.PromptTokens, r.PromptReported, r.PromptWords)
		}
	}
}

func TestRunConcurrencySweep(t *testing.T) {
	f := newFake(t)
	c := f.config()
	c.Concurrency = []int{1, 3}
	c.Requests = 7
	c.Prompt = Dist{Kind: DistUniform, A: 10, B: 20}
	c.Output = Fixed(5)
	c.IgnoreEOS = true
	temp, topP := 0.7, 0.95
	c.Temperature, c.TopP = &temp, &topP
	rep := mustRun(t, c)

	if rep.Schema != Schema || rep.Target.Model != "fake-model" || len(rep.Levels) != 2 {
		t.Fatalf("schema %q model %q levels %d", rep.Schema, rep.Target.Model, len(rep.Levels))
	}
	for i, want := range []int{1, 3} {
		l := &rep.Levels[i]
		if l.Mode != ModeConcurrency || l.Concurrency != want || l.Requests != 7 || l.Completed != 7 || l.Errors != 0 {
			t.Errorf("level %d: %+v", i, l)
		}
		if l.OutputTokens != 35 || l.TTFT.N != 7 || l.E2E.N != 7 || l.TPOT.N != 7 || l.ITL.N != 7*4 {
			t.Errorf("%s: output %d, ttft n %d, e2e n %d, tpot n %d, itl n %d", l.Name(), l.OutputTokens, l.TTFT.N, l.E2E.N, l.TPOT.N, l.ITL.N)
		}
		var prompt int
		for j, r := range l.Results {
			if r.Index != j {
				t.Errorf("%s: results not in index order: %d at %d", l.Name(), r.Index, j)
			}
			prompt += r.PromptTokens
		}
		if l.PromptTokens != prompt || l.PromptReported != 7 {
			t.Errorf("%s: prompt tokens %d, want %d; reported %d", l.Name(), l.PromptTokens, prompt, l.PromptReported)
		}
		if !(l.RequestThroughput > 0 && l.OutputTokensPerS > 0 && l.InputTokensPerS > 0 && l.DurationS > 0) {
			t.Errorf("%s: throughputs %v %v %v over %vs", l.Name(), l.RequestThroughput, l.OutputTokensPerS, l.InputTokensPerS, l.DurationS)
		}
		checkResults(t, l)
	}
	bodies, headers, maxIn := f.snapshot()
	if len(bodies) != 14 || maxIn > 3 {
		t.Errorf("server saw %d requests, %d at once", len(bodies), maxIn)
	}
	for i, b := range bodies {
		if b.Model != "fake-model" || !b.Stream || !b.StreamOptions.IncludeUsage || !b.IgnoreEOS || b.MaxTokens != 5 ||
			len(b.Messages) != 1 || b.Messages[0].Role != "user" || b.SessionID != "" ||
			b.Temperature == nil || *b.Temperature != 0.7 || b.TopP == nil || *b.TopP != 0.95 {
			t.Errorf("body %d: %+v", i, b)
		}
		if n := len(strings.Fields(b.Messages[0].Content)); n < 10 || n > 20 {
			t.Errorf("body %d: prompt of %d words", i, n)
		}
		if headers[i].Get("X-Session-ID") != "" || headers[i].Get("Accept") != "text/event-stream" {
			t.Errorf("headers %d: %v", i, headers[i])
		}
	}
	// The same seed sends the same prompts; levels differ from each other.
	again := mustRun(t, c)
	for i := range rep.Levels {
		for j := range rep.Levels[i].Results {
			if a, b := rep.Levels[i].Results[j].PromptWords, again.Levels[i].Results[j].PromptWords; a != b {
				t.Fatalf("level %d request %d: %d words, then %d", i, j, a, b)
			}
		}
	}
	if p0, p1 := newRequest(c, 0, 0).Messages[0].Content, newRequest(c, 1, 0).Messages[0].Content; p0 == p1 {
		t.Error("levels 0 and 1 send the same first prompt")
	}
}

func TestRunCompletionsEndpoint(t *testing.T) {
	f := newFake(t)
	c := f.config()
	c.Endpoint, c.Model, c.Requests = Completions, "chosen", 3
	c.APIKey = "sk-test"
	rep := mustRun(t, c)
	l := &rep.Levels[0]
	if l.Completed != 3 || l.OutputTokens != 3*64 {
		t.Fatalf("completed %d, output %d", l.Completed, l.OutputTokens)
	}
	checkResults(t, l)
	bodies, headers, _ := f.snapshot()
	for i, b := range bodies {
		if b.Model != "chosen" || b.Prompt == "" || len(b.Messages) != 0 || b.IgnoreEOS || b.Temperature != nil || b.TopP != nil {
			t.Errorf("body %d: %+v", i, b)
		}
		if headers[i].Get("Authorization") != "Bearer sk-test" {
			t.Errorf("headers %d: %v", i, headers[i])
		}
	}
	data, _ := json.Marshal(rep)
	if bytes.Contains(data, []byte("sk-test")) {
		t.Error("the report holds the API key")
	}
}

// TestClosedLoopReachesConcurrency holds every request until four are in
// flight at once: the closed loop must reach its level, and never pass it.
func TestClosedLoopReachesConcurrency(t *testing.T) {
	f := newFake(t)
	f.arrived, f.gate = make(chan int, 64), make(chan struct{})
	c := f.config()
	c.Concurrency, c.Requests, c.Output = []int{4}, 10, Fixed(2)
	done := make(chan *Report)
	go func() {
		rep, err := Run(context.Background(), c, Options{})
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	for range 4 {
		<-f.arrived
	}
	close(f.gate)
	rep := <-done
	if _, _, maxIn := f.snapshot(); maxIn != 4 {
		t.Errorf("max in flight %d, want 4", maxIn)
	}
	if rep == nil || rep.Levels[0].Completed != 10 {
		t.Fatalf("report %+v", rep)
	}
}

func TestRunRecordsErrors(t *testing.T) {
	f := newFake(t)
	f.respond = func(n int, w http.ResponseWriter, body requestBody) bool {
		fl := w.(http.Flusher)
		switch n % 6 {
		case 1:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"type":"overloaded","message":"busy","code":null}}`)
		case 2:
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {not json\n\n")
		case 3:
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
			fl.Flush() // and hang up: truncated
		case 4:
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"type\":\"kv_cache_full\",\"message\":\"no room\"}}\n\n")
		case 5:
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
		default:
			return false
		}
		return true
	}
	c := f.config()
	c.Requests, c.Output = 12, Fixed(3)
	rep := mustRun(t, c)
	l := &rep.Levels[0]
	want := map[string]int{"http_503": 2, "malformed_stream": 2, "truncated": 2, "server_error": 2, "no_output": 2}
	if l.Requests != 12 || l.Completed != 2 || l.Errors != 10 || l.ErrorRate != 10.0/12 || !equalMaps(l.ErrorsByKind, want) {
		t.Fatalf("requests %d completed %d errors %d rate %v kinds %v", l.Requests, l.Completed, l.Errors, l.ErrorRate, l.ErrorsByKind)
	}
	for _, r := range l.Results {
		switch r.Index % 6 {
		case 1:
			if r.Status != 503 || r.ErrorType != "overloaded" || r.ErrorMessage != "busy" {
				t.Errorf("503: %+v", r)
			}
		case 4:
			if r.ErrorType != "kv_cache_full" || r.ErrorMessage != "no room" || r.Chunks != 1 {
				t.Errorf("stream error: %+v", r)
			}
		}
	}
	if l.TTFT.N != 2 || l.OutputTokens != 6 {
		t.Errorf("latencies over %d requests, %d output tokens: errors must not count", l.TTFT.N, l.OutputTokens)
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil || !strings.Contains(md.String(), "http_503 ×2") {
		t.Errorf("markdown (%v):\n%s", err, md.String())
	}
}

func equalMaps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRunSessions(t *testing.T) {
	f := newFake(t)
	c := f.config()
	c.Sessions, c.Turns = 3, 3
	c.Prompt, c.TurnPrompt, c.Output = Fixed(50), Fixed(5), Fixed(4)
	rep := mustRun(t, c)
	if len(rep.Levels) != 1 {
		t.Fatalf("%d levels", len(rep.Levels))
	}
	l := &rep.Levels[0]
	if l.Mode != ModeSessions || l.Name() != "sessions=3x3" || l.Requests != 9 || l.Completed != 9 || len(l.PerTurn) != 3 {
		t.Fatalf("level %s: requests %d completed %d turns %d", l.Name(), l.Requests, l.Completed, len(l.PerTurn))
	}
	checkResults(t, l)
	for i, ts := range l.PerTurn {
		// turn k: 50 + (k−1)·(4 answer words + 5 new words) + overhead
		wantPrompt := float64(50 + i*9 + promptOverhead)
		if ts.Turn != i+1 || ts.Requests != 3 || ts.TTFT.N != 3 || ts.PromptTokensMean != wantPrompt || ts.TTFTRatio <= 0 {
			t.Errorf("turn %d: %+v (want prompt %v)", i+1, ts, wantPrompt)
		}
	}
	if l.PerTurn[0].TTFTRatio != 1 {
		t.Errorf("turn 1 ratio %v", l.PerTurn[0].TTFTRatio)
	}
	bodies, headers, maxIn := f.snapshot()
	if maxIn > 3 {
		t.Errorf("%d requests at once with 3 sessions", maxIn)
	}
	history := map[string][]message{} // the last request of each session
	for i, b := range bodies {
		if b.SessionID == "" || headers[i].Get("X-Session-ID") != b.SessionID {
			t.Fatalf("request %d: session %q, header %q", i, b.SessionID, headers[i].Get("X-Session-ID"))
		}
		prev := history[b.SessionID]
		if len(b.Messages) != len(prev)+2 && !(prev == nil && len(b.Messages) == 1) {
			t.Fatalf("session %s: %d messages after %d", b.SessionID, len(b.Messages), len(prev))
		}
		if prev != nil {
			if !slices.Equal(b.Messages[:len(prev)], prev) {
				t.Errorf("session %s: history changed", b.SessionID)
			}
			if a := b.Messages[len(prev)]; a.Role != "assistant" || a.Content != fakeAnswer(4) {
				t.Errorf("session %s: appended %+v", b.SessionID, a)
			}
		}
		history[b.SessionID] = b.Messages
	}
	if len(history) != 3 {
		t.Errorf("%d sessions", len(history))
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil || !strings.Contains(md.String(), "TTFT per turn (sessions=3x3)") ||
		!strings.Contains(md.String(), "Turn-2 TTFT p50 is") {
		t.Errorf("markdown (%v):\n%s", err, md.String())
	}
	paths, err := WriteCharts(rep, t.TempDir())
	if err != nil || len(paths) != 5 || filepath.Base(paths[4]) != "turns.png" {
		t.Errorf("charts %v, %v", paths, err)
	}
}

func TestRunRateAndDuration(t *testing.T) {
	f := newFake(t)
	t.Run("rate", func(t *testing.T) {
		c := f.config()
		c.Rates, c.Requests, c.Output = []float64{2000, 4000}, 10, Fixed(2)
		rep := mustRun(t, c)
		for _, l := range rep.Levels {
			if l.Mode != ModeRate || l.Completed != 10 {
				t.Errorf("%s: %d completed", l.Name(), l.Completed)
			}
			checkResults(t, &l)
		}
		if rep.Levels[1].Name() != "rate=4000" || rep.Levels[1].X() != 4000 {
			t.Errorf("level name %s", rep.Levels[1].Name())
		}
	})
	t.Run("duration", func(t *testing.T) {
		c := f.config()
		c.Concurrency, c.Requests, c.Duration, c.Output = []int{2}, 0, 50*time.Millisecond, Fixed(2)
		rep := mustRun(t, c)
		l := &rep.Levels[0]
		if l.Requests == 0 || l.Completed != l.Requests {
			t.Errorf("%d requests, %d completed", l.Requests, l.Completed)
		}
		checkResults(t, l)
	})
}

// TestRunCanceled: an interrupted run returns the levels so far; the
// requests its interruption cut short are left out of the level's counts
// (they say nothing of the server), and the level says it was interrupted.
func TestRunCanceled(t *testing.T) {
	f := newFake(t)
	f.arrived, f.gate = make(chan int, 64), make(chan struct{})
	c := f.config()
	c.Concurrency, c.Requests = []int{2, 4}, 100
	ctx, cancel := context.WithCancel(context.Background())
	defer close(f.gate)
	go func() {
		<-f.arrived
		<-f.arrived
		cancel()
	}()
	rep, err := Run(ctx, c, Options{})
	if !errors.Is(err, context.Canceled) || rep == nil || len(rep.Levels) != 1 {
		t.Fatalf("err %v, report %+v", err, rep)
	}
	if l := rep.Levels[0]; l.Interrupted != 2 || l.Requests != 0 || l.Errors != 0 {
		t.Errorf("interrupted %d, requests %d, errors %v; want 2, 0, none", l.Interrupted, l.Requests, l.ErrorsByKind)
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "was interrupted: 2 requests") {
		t.Errorf("the report does not say the level was interrupted:\n%s", md.String())
	}
}

func TestRunFailsEarly(t *testing.T) {
	f := newFake(t)
	f.respond = func(int, http.ResponseWriter, requestBody) bool { panic(http.ErrAbortHandler) }
	t.Run("no models", func(t *testing.T) {
		f.models = nil
		if _, err := Run(context.Background(), f.config(), Options{}); !errors.Is(err, ErrNoModel) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("warmup", func(t *testing.T) {
		c := f.config()
		c.Model, c.Warmup = "m", 1
		if _, err := Run(context.Background(), c, Options{}); err == nil || !strings.Contains(err.Error(), "warm-up") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("config", func(t *testing.T) {
		c := f.config()
		c.Concurrency = nil
		if _, err := Run(context.Background(), c, Options{}); !errors.Is(err, ErrConfig) {
			t.Errorf("err %v", err)
		}
	})
}

// TestReportRoundTrip checks the JSON schema, --compare on two real runs,
// and that the charts are written.
func TestReportRoundTrip(t *testing.T) {
	f := newFake(t)
	c := f.config()
	c.Concurrency, c.Requests, c.Output = []int{1, 2}, 4, Fixed(3)
	old := mustRun(t, c)
	c.Concurrency = []int{2, 4}
	rep := mustRun(t, c)

	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "started", "target", "config", "levels"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("report has no %q", k)
		}
	}
	cfg := raw["config"].(map[string]any)
	if cfg["prompt"] != "128" || cfg["output"] != "3" || cfg["endpoint"] != "chat" {
		t.Errorf("config %v", cfg)
	}
	level := raw["levels"].([]any)[0].(map[string]any)
	for _, k := range []string{"mode", "concurrency", "requests", "completed", "errors", "error_rate", "duration_s",
		"request_throughput", "output_tokens_per_s", "input_tokens_per_s", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "results"} {
		if _, ok := level[k]; !ok {
			t.Errorf("level has no %q", k)
		}
	}
	for _, k := range []string{"n", "mean", "p50", "p90", "p99"} {
		if _, ok := level["ttft_ms"].(map[string]any)[k]; !ok {
			t.Errorf("ttft_ms has no %q", k)
		}
	}
	result := level["results"].([]any)[0].(map[string]any)
	for _, k := range []string{"index", "ttft_ms", "tpot_ms", "e2e_ms", "output_tokens", "prompt_tokens", "chunks"} {
		if _, ok := result[k]; !ok {
			t.Errorf("result has no %q", k)
		}
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil || back.Config.Prompt != c.Prompt || len(back.Levels) != 2 {
		t.Fatalf("round trip: %v, %+v", err, back.Config)
	}

	cmp := Compare(old, &back)
	if len(cmp.Levels) != 1 || cmp.Levels[0].Level != "c=2" || len(cmp.Missing) != 2 {
		t.Fatalf("comparison %+v", cmp)
	}
	o, n := old.Levels[1], back.Levels[0]
	for _, r := range cmp.Levels[0].Ratios {
		switch r.Metric {
		case "output_tokens_per_s":
			if r.Old != o.OutputTokensPerS || r.New != n.OutputTokensPerS || r.Ratio == nil || *r.Ratio != n.OutputTokensPerS/o.OutputTokensPerS {
				t.Errorf("%s: %+v", r.Metric, r)
			}
		case "error_rate":
			if r.Ratio == nil || *r.Ratio != 1 {
				t.Errorf("error rate 0/0 should be 1: %+v", r)
			}
		}
	}

	dir := filepath.Join(t.TempDir(), "charts")
	paths, err := WriteCharts(&back, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 4 {
		t.Errorf("charts %v", paths)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s: not a PNG (%v)", p, err)
		}
	}
}

// TestSessionAbortedTurns: a failed turn ends its session; the turns it
// did not send count as failed (session_aborted), so the error rate is over
// the turns planned (here one session fails at its first turn: 4 of 8),
// and the per-turn table shows them.
func TestSessionAbortedTurns(t *testing.T) {
	f := newFake(t)
	f.respond = func(n int, w http.ResponseWriter, body requestBody) bool {
		if body.SessionID == sessionID(1, 0, 1) {
			http.Error(w, `{"error":{"type":"overloaded","message":"busy"}}`, http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	c := f.config()
	c.Sessions, c.Turns = 2, 4
	c.Output = Fixed(4)
	rep, err := Run(context.Background(), c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := rep.Levels[0]
	if l.Requests != 8 || l.Errors != 4 || l.ErrorsByKind[errSessionAborted] != 3 || l.ErrorRate != 0.5 {
		t.Fatalf("requests %d errors %d %v rate %.3f; want 8, 4 (3 session_aborted), 0.5", l.Requests, l.Errors, l.ErrorsByKind, l.ErrorRate)
	}
	for _, pt := range l.PerTurn {
		if pt.Requests != 2 {
			t.Errorf("turn %d: %d requests, want 2 (one per session)", pt.Turn, pt.Requests)
		}
	}
}

// TestRunRateEndsWithLastResponse: a rate level ends when its last response
// does. It waited one more arrival gap for a request it never sent, and
// counted that wait in its duration (request throughput too low).
func TestRunRateEndsWithLastResponse(t *testing.T) {
	f := newFake(t)
	c := f.config()
	const rate, n = 4.0, 3
	c.Rates, c.Requests, c.Output = []float64{rate}, n, Fixed(2)
	// A seed whose gap after the last request is long, so a level that
	// waited for it cannot pass for one that did not.
	var a []time.Duration
	for c.Seed = 1; ; c.Seed++ {
		if a = Arrivals(rate, n+1, c.Seed, 0); a[n]-a[n-1] > 400*time.Millisecond && a[n-1] < time.Second {
			break
		}
	}
	l := mustRun(t, c).Levels[0]
	if l.Completed != n {
		t.Fatalf("%d completed", l.Completed)
	}
	if got, unsent := l.DurationS, a[n].Seconds(); got >= unsent {
		t.Errorf("level lasted %.3fs, past the arrival of the request it never sent (%.3fs; its last went out at %.3fs)", got, unsent, a[n-1].Seconds())
	}
}

// TestRunModelsLookupTimeout: without --model the bench asks /v1/models
// first; a server that accepts and never answers fails the run after the
// request timeout instead of hanging it.
func TestRunModelsLookupTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	c := DefaultConfig()
	c.URL, c.Timeout, c.Model = srv.URL, 100*time.Millisecond, ""
	done := make(chan error, 1)
	go func() { _, err := Run(context.Background(), c, Options{}); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run: %v, want the lookup's deadline", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still waiting for GET /v1/models")
	}
}

// TestLevelSeriesSkipsEmpty: a level without a successful request has no
// latency to chart; it was drawn at 0 ms, the sweep's fastest point.
func TestLevelSeriesSkipsEmpty(t *testing.T) {
	levels := []Level{
		{Concurrency: 1, TTFT: Summary{N: 4, P50: 150}},
		{Concurrency: 4},
		{Concurrency: 8, TTFT: Summary{N: 4, P50: 400}},
	}
	got := levelSeries(levels, func(l *Level) (float64, bool) { return l.TTFT.P50, l.TTFT.N > 0 })
	if len(got) != 2 || got[0].X != 1 || got[1].X != 8 || got[1].Y != 400 {
		t.Errorf("series %v, want c=1 and c=8 only", got)
	}
	// A sweep where nothing succeeded still charts (empty latency lines).
	rep := &Report{Config: DefaultConfig(), Levels: []Level{{Concurrency: 1}, {Concurrency: 2}}}
	if _, err := WriteCharts(rep, t.TempDir()); err != nil {
		t.Errorf("charts of a failed sweep: %v", err)
	}
}
