package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/model"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func TestAuth(t *testing.T) {
	cfg := DefaultConfig()
	cfg.APIKeys = []string{"sk-one", "sk-two"}
	f := newFixture(t, cfg, nil)
	ctx := context.Background()
	for _, key := range []string{"", "sk-wrong"} {
		c := f.client(option.WithAPIKey(key))
		_, err := c.Models.List(ctx)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Type != typeAuthentication {
			t.Fatalf("key %q: %v", key, err)
		}
	}
	resp, body := f.do(t, "GET", "/v1/models", "")
	checkError(t, resp, body, 401, typeAuthentication, "invalid_api_key", "")
	ok := f.client(option.WithAPIKey("sk-two"))
	if _, err := ok.Models.List(ctx); err != nil {
		t.Fatal(err)
	}
	// The scheme is case-insensitive (RFC 9110); another scheme is no key.
	for _, h := range []string{"bearer sk-one", "BEARER  sk-one "} {
		if resp, body := f.do(t, "GET", "/v1/models", "", "Authorization", h); resp.StatusCode != 200 {
			t.Fatalf("Authorization %q: %d %s", h, resp.StatusCode, body)
		}
	}
	resp, body = f.do(t, "GET", "/v1/models", "", "Authorization", "Basic sk-one")
	checkError(t, resp, body, 401, typeAuthentication, "invalid_api_key", "")
	if !strings.Contains(string(body), "missing API key") {
		t.Fatalf("another scheme: %s", body)
	}
	// Probes and metrics stay open.
	for _, p := range []string{"/health", "/ready", "/metrics"} {
		if resp, body := f.do(t, "GET", p, ""); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
}

func TestRateLimit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.APIKeys = []string{"sk-a", "sk-b"}
	cfg.RequestsPerSecond, cfg.Burst = 1, 2
	f := newFixture(t, cfg, nil)
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	f.srv.limits.nowFunc = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	get := func(key string) (*http.Response, []byte) {
		return f.do(t, "GET", "/v1/models", "", "Authorization", "Bearer "+key)
	}
	for i := range 2 {
		if resp, body := get("sk-a"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := get("sk-a")
	checkError(t, resp, body, 429, typeRateLimit, "rate_limit_exceeded", "")
	if resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	// Another key has its own bucket.
	if resp, body := get("sk-b"); resp.StatusCode != 200 {
		t.Fatalf("other key: %d %s", resp.StatusCode, body)
	}
	// Retry-After is the bucket's own wait, rounded up to whole seconds.
	slow := DefaultConfig()
	slow.RequestsPerSecond, slow.Burst = 0.1, 1
	fs := newFixture(t, slow, nil)
	fs.srv.limits.nowFunc = func() time.Time { return time.Unix(1000, 0) }
	fs.do(t, "GET", "/v1/models", "")
	resp, body = fs.do(t, "GET", "/v1/models", "")
	checkError(t, resp, body, 429, typeRateLimit, "rate_limit_exceeded", "")
	if ra := resp.Header.Get("Retry-After"); ra != "10" {
		t.Fatalf("Retry-After %q at 0.1 requests/s, want 10", ra)
	}
	// One second later one more request fits.
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if resp, body := get("sk-a"); resp.StatusCode != 200 {
		t.Fatalf("after refill: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get("sk-a"); resp.StatusCode != 429 {
		t.Fatalf("after refill, second: %d", resp.StatusCode)
	}
}

func chatBody(id string, maxTokens int, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello"}],"max_tokens":%d,"stream":%v,"ignore_eos":true,"seed":1}`,
		id, maxTokens, stream)
}

// startStream posts a streaming chat request and returns once the response
// headers are in; the caller reads or closes the body.
func startStream(t *testing.T, f *fixture, ctx context.Context, maxTokens int, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", f.http.URL+"/v1/chat/completions", strings.NewReader(chatBody(f.id, maxTokens, true)))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("stream status %d", resp.StatusCode)
	}
	return resp
}

// readSSE reads a stream to the end and returns the data lines.
func readSSE(t *testing.T, resp *http.Response) []string {
	t.Helper()
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestConcurrencyCap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxConcurrentPerKey = 1
	g := newGated(newEngine(t))
	f := newFixture(t, cfg, g)
	resp := startStream(t, f, context.Background(), 8)
	<-g.started
	r2, body := f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 4, false))
	checkError(t, r2, body, 429, typeRateLimit, "concurrency_limit_exceeded", "")
	close(g.release)
	lines := readSSE(t, resp)
	if lines[len(lines)-1] != "[DONE]" {
		t.Fatalf("stream ended with %q", lines[len(lines)-1])
	}
	if r3, body := f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 4, false)); r3.StatusCode != 200 {
		t.Fatalf("after the first finished: %d %s", r3.StatusCode, body)
	}
}

// tapEngine reports each Submit's context cancellation and final event.
type tapEngine struct {
	Engine
	cancelled chan struct{}
	final     chan engine.Event
}

func (e *tapEngine) Submit(ctx context.Context, r engine.Request) (<-chan engine.Event, error) {
	in, err := e.Engine.Submit(ctx, r)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { close(e.cancelled) })
	out := make(chan engine.Event, cap(in))
	go func() {
		defer close(out)
		for ev := range in {
			if ev.Done {
				e.final <- ev
			}
			out <- ev
		}
	}()
	return out, nil
}

func TestClientDisconnectCancels(t *testing.T) {
	// Two forward passes (the first tokens), then nothing until the server
	// has cancelled the request, however fast the engine would finish.
	eng, hold := newHeldEngine(t, 2)
	tap := &tapEngine{Engine: eng, cancelled: make(chan struct{}), final: make(chan engine.Event, 1)}
	go func() { <-tap.cancelled; close(hold) }()
	f := newFixture(t, DefaultConfig(), tap)
	ctx, cancel := context.WithCancel(context.Background())
	resp := startStream(t, f, ctx, 230)
	// Read the role chunk and one content chunk, then hang up.
	br := bufio.NewReader(resp.Body)
	for n := 0; n < 2; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			n++
		}
	}
	cancel()
	resp.Body.Close()
	<-tap.cancelled // the server cancelled the engine request's context
	ev := <-tap.final
	if ev.FinishReason != engine.FinishCancel || ev.Generated >= 230 {
		t.Errorf("final event: finish %q after %d tokens; want cancelled early", ev.FinishReason, ev.Generated)
	}
	waitFor(t, "engine idle", func() bool { s := eng.Stats(); return s.Running == 0 && s.Waiting == 0 && s.KVBlocksUsed == 0 })
}

func TestDrain(t *testing.T) {
	g := newGated(newEngine(t))
	f := newFixture(t, DefaultConfig(), g)
	resp := startStream(t, f, context.Background(), 6)
	<-g.started
	drained := make(chan error, 1)
	go func() { drained <- f.srv.Drain(context.Background()) }()
	waitFor(t, "draining", f.srv.Draining)

	r, body := f.do(t, "GET", "/ready", "")
	if r.StatusCode != 503 || !strings.Contains(string(body), "draining") {
		t.Fatalf("/ready while draining: %d %s", r.StatusCode, body)
	}
	if r, _ := f.do(t, "GET", "/health", ""); r.StatusCode != 200 {
		t.Fatalf("/health while draining: %d", r.StatusCode)
	}
	r, body = f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 4, false))
	checkError(t, r, body, 503, typeUnavailable, "draining", "")
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with a stream in flight", err)
	default:
	}
	// The in-flight stream finishes normally, then Drain returns.
	close(g.release)
	lines := readSSE(t, resp)
	if len(lines) < 3 || lines[len(lines)-1] != "[DONE]" || !strings.Contains(lines[len(lines)-2], `"finish_reason":"length"`) {
		t.Fatalf("drained stream: %q", lines)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

// heldUntilCancelled is a fixture whose engine computes nothing until a
// request's context is cancelled, however fast it would generate.
func heldUntilCancelled(t *testing.T) (*engine.Engine, *gatedEngine, *fixture) {
	eng, hold := newHeldEngine(t, 0)
	g := newGated(eng)
	var once sync.Once
	g.cancelled = func() { once.Do(func() { close(hold) }) }
	return eng, g, newFixture(t, DefaultConfig(), g)
}

func TestDrainDeadlineCancels(t *testing.T) {
	eng, g, f := heldUntilCancelled(t)
	resp := startStream(t, f, context.Background(), 100)
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the deadline has passed already
	if err := f.srv.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain: %v", err)
	}
	// The stream did not complete: it ends with a draining error event,
	// not a finish_reason that would pass it off as finished.
	lines := readSSE(t, resp)
	if lines[len(lines)-1] != "[DONE]" || !strings.Contains(lines[len(lines)-2], `"code":"draining"`) || strings.Contains(strings.Join(lines, "\n"), `"finish_reason":"`) {
		t.Fatalf("cancelled stream: %q", lines)
	}
	waitFor(t, "engine idle", func() bool { s := eng.Stats(); return s.Running == 0 && s.Waiting == 0 })
}

// TestDrainDeadlineNonStream: a non-streaming request Drain cancels gets a
// draining 503 (marked for an entry node to re-home), not a 200 with the
// partial text.
func TestDrainDeadlineNonStream(t *testing.T) {
	_, g, f := heldUntilCancelled(t)
	type answer struct {
		resp *http.Response
		body []byte
	}
	got := make(chan answer, 1)
	go func() {
		r, b := f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 100, false))
		got <- answer{r, b}
	}()
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.srv.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain: %v", err)
	}
	a := <-got
	checkError(t, a.resp, a.body, 503, typeUnavailable, "draining", "")
	if a.resp.Header.Get(HeaderDraining) == "" {
		t.Error("the 503 is not marked as a draining node's")
	}
}

func TestMetricsAndRequestID(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 5, false), "X-Request-ID", "req-123")
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-ID") != "req-123" {
		t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("X-Request-ID"), body)
	}
	resp, _ = f.do(t, "GET", "/v1/models", "", "X-Request-ID", strings.Repeat("x", 200))
	if id := resp.Header.Get("X-Request-ID"); len(id) != 24 {
		t.Fatalf("generated request id %q", id)
	}
	_, body = f.do(t, "GET", "/metrics", "")
	m := string(body)
	for _, want := range []string{
		`conclave:time_to_first_token_seconds_count{model_name="` + f.id + `"} 1`,
		`conclave:time_per_output_token_seconds_count{model_name="` + f.id + `"} 1`,
		`conclave:e2e_request_latency_seconds_count{model_name="` + f.id + `"} 1`,
		`conclave:request_success_total{finished_reason="length",model_name="` + f.id + `"} 1`,
		`conclave:num_requests_running{model_name="` + f.id + `"} 0`,
		`conclave:num_requests_waiting{model_name="` + f.id + `"} 0`,
		`conclave:kv_cache_usage_perc{model_name="` + f.id + `"}`,
		`conclave:prefix_cache_hits_total{model_name="` + f.id + `"}`,
		`conclave:prefix_cache_queries_total{model_name="` + f.id + `"}`,
		`conclave:generation_tokens_total{model_name="` + f.id + `"} 5`,
		`conclave:prompt_tokens_total{model_name="` + f.id + `"}`,
		`conclave:http_requests_total{code="200",model_name="` + f.id + `",route="chat"} 1`,
		`conclave:iteration_tokens_total_bucket{model_name="` + f.id + `",le="8192"}`,
		`conclave:engine_step_duration_seconds_bucket{model_name="` + f.id + `",le="+Inf"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Every phase of the forward passes is exported; the request's steps
	// spent time in the attention and the experts.
	for p := range model.NumPhases {
		name := `conclave:engine_phase_seconds_total{model_name="` + f.id + `",phase="` + p.String() + `"} `
		i := strings.Index(m, name)
		if i < 0 {
			t.Errorf("metrics lack %q", name)
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(m[i+len(name):])[0], 64)
		if err != nil || ((p == model.PhaseAttention || p == model.PhaseExperts) && !(v > 0)) {
			t.Errorf("%s%s: want a positive number of seconds", name, strings.Fields(m[i+len(name):])[0])
		}
	}
	if t.Failed() {
		t.Log(m)
	}
}

// statsEngine reports fixed Stats.
type statsEngine struct {
	Engine
	s engine.Stats
}

func (e statsEngine) Stats() engine.Stats { return e.s }

// TestMetricsKVPressure: preemptions, evictions and cached blocks reach
// /metrics as vLLM-style series.
func TestMetricsKVPressure(t *testing.T) {
	f := newFixture(t, DefaultConfig(), statsEngine{Engine: newEngine(t), s: engine.Stats{Preemptions: 3, Evictions: 41, KVBlocksCached: 7}})
	_, body := f.do(t, "GET", "/metrics", "")
	for _, want := range []string{
		`conclave:num_preemptions_total{model_name="` + f.id + `"} 3`,
		`conclave:kv_cache_evictions_total{model_name="` + f.id + `"} 41`,
		`conclave:kv_cache_cached_blocks{model_name="` + f.id + `"} 7`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
