package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/internal/peersig"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func jsonLogger(buf *lockedBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// histSum returns a histogram's sample count and sum from the registry.
func histSum(t *testing.T, s *Server, name string) (uint64, float64) {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var h *dto.Histogram = mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatalf("no %s", name)
	return 0, 0
}

// TestForwardAbortLoggedAndCounted: a forwarded (session) request whose
// home breaks off in the middle of a response body makes ReverseProxy
// abort the handler (http.ErrAbortHandler); the request is still logged,
// marked aborted, and counted.
func TestForwardAbortLoggedAndCounted(t *testing.T) {
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		w.Write([]byte(`{"id":"cmpl-x",`))
		w.(http.Flusher).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close() // the home dies mid-body
	}))
	defer home.Close()
	var logs lockedBuffer
	cfg := DefaultConfig()
	cfg.Logger = jsonLogger(&logs)
	a := newSessionNode(t, cfg, nil)
	a.sess.homes["s1"] = home.URL

	req, _ := http.NewRequest("POST", a.http.URL+"/v1/completions", strings.NewReader(completionBody(a.id, "s1", false)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", "req-abort-1")
	if resp, err := a.http.Client().Do(req); err == nil {
		resp.Body.Close()
	}
	waitFor(t, "the aborted request's log line", func() bool {
		return strings.Contains(logs.String(), `"request_id":"req-abort-1"`) && strings.Contains(logs.String(), `"aborted":true`)
	})
	if n := testutil.ToFloat64(a.srv.metrics.httpRequests.WithLabelValues("completions", "200")) +
		testutil.ToFloat64(a.srv.metrics.httpRequests.WithLabelValues("completions", "502")); n != 1 {
		t.Errorf("http_requests_total{route=completions} = %v, want 1", n)
	}
}

// TestLatencyFromArrival: a session request whose home is slow to fail
// (600 ms before it drops the connection) is re-homed and served locally;
// the client waited the whole time, and e2e_request_latency_seconds and
// time_to_first_token_seconds count it, from the request's arrival.
func TestLatencyFromArrival(t *testing.T) {
	const stall = 600 * time.Millisecond
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(stall)
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close() // no response: forward fails, the session is re-homed
	}))
	defer home.Close()
	a := newSessionNode(t, DefaultConfig(), nil)
	a.sess.homes["s1"] = home.URL
	a.sess.rehomeTo = "" // re-home here

	t0 := time.Now()
	resp, body := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", false))
	client := time.Since(t0)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	n, e2e := histSum(t, a.srv, "conclave:e2e_request_latency_seconds")
	_, ttft := histSum(t, a.srv, "conclave:time_to_first_token_seconds")
	t.Logf("client saw %v; e2e observed %d sample(s) sum %.3fs; ttft %.3fs", client, n, e2e, ttft)
	if e2e < stall.Seconds() {
		t.Errorf("e2e_request_latency_seconds = %.3fs for a request the client waited %v on (%v of it before the engine)", e2e, client, stall)
	}
	if ttft < stall.Seconds() {
		t.Errorf("time_to_first_token_seconds = %.3fs, the client waited at least %v for the first token", ttft, stall)
	}
}

// TestPeerRefusalLogHasRequestID: the warning about a forwarded request
// whose signature is refused carries the request's id.
func TestPeerRefusalLogHasRequestID(t *testing.T) {
	var logs lockedBuffer
	cfg := DefaultConfig()
	cfg.Logger = jsonLogger(&logs)
	cfg.PeerKey = []byte("the-cluster-peer-key-0123456789abcdef")
	f := newFixture(t, cfg, nil)
	body := completionBody(f.id, "", false)
	req, _ := http.NewRequest("POST", f.http.URL+"/v1/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", "req-peer-1")
	req.Header.Set(HeaderForwarded, "1")
	peersig.Sign(req.Header, []byte("some-other-key"), time.Now(), "POST", "/v1/completions", peersig.BodyDigest([]byte(body)), "", cfg.PeerAddr)
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	found := false
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "signature was refused") {
			continue
		}
		found = true
		var m map[string]any
		json.Unmarshal([]byte(line), &m)
		if m["request_id"] != "req-peer-1" {
			t.Errorf("request log line without the request id: %s", line)
		}
	}
	if !found {
		t.Fatalf("no refusal line:\n%s", logs.String())
	}
}

// embedBlock blocks Embed until the request's context ends.
type embedBlock struct {
	Engine
	started chan struct{}
}

func (e embedBlock) Embed(ctx context.Context, tokens []int32) ([]float32, error) {
	close(e.started)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestClientGoneIs499: a client that leaves during /v1/embeddings gets
// nothing written, and the request is counted and logged as 499 (nginx's
// "client closed request"), not a successful 200.
func TestClientGoneIs499(t *testing.T) {
	var logs lockedBuffer
	cfg := DefaultConfig()
	cfg.Logger = jsonLogger(&logs)
	eb := embedBlock{Engine: newEngine(t), started: make(chan struct{})}
	f := newFixture(t, cfg, eb)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", f.http.URL+"/v1/embeddings",
		strings.NewReader(`{"model":"`+f.id+`","input":"hello"}`))
	req.Header.Set("Content-Type", "application/json")
	go func() { <-eb.started; cancel() }()
	if resp, err := f.http.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("expected the client to abort")
	}
	waitFor(t, "the access log", func() bool { return strings.Contains(logs.String(), `"msg":"http request"`) })
	if n := testutil.ToFloat64(f.srv.metrics.httpRequests.WithLabelValues("embeddings", "499")); n != 1 {
		t.Errorf("http_requests_total{route=embeddings,code=499} = %v for a request whose client left; log: %s", n, logs.String())
	}
}

// TestRefusedRequestsKeepTheirRoute: a 401 or 429, refused before the
// request reaches its route, counts under the route, not "unknown".
func TestRefusedRequestsKeepTheirRoute(t *testing.T) {
	cfg := DefaultConfig()
	cfg.APIKeys = []string{"sk-good"}
	cfg.RequestsPerSecond, cfg.Burst = 0.001, 1
	f := newFixture(t, cfg, nil)
	resp, _ := f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 1, false))
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 1, false), "Authorization", "Bearer sk-good")
	resp, _ = f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 1, false), "Authorization", "Bearer sk-good")
	if resp.StatusCode != 429 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	hr := f.srv.metrics.httpRequests
	t.Logf("chat/401 %v unknown/401 %v chat/429 %v unknown/429 %v",
		testutil.ToFloat64(hr.WithLabelValues("chat", "401")), testutil.ToFloat64(hr.WithLabelValues("unknown", "401")),
		testutil.ToFloat64(hr.WithLabelValues("chat", "429")), testutil.ToFloat64(hr.WithLabelValues("unknown", "429")))
	if testutil.ToFloat64(hr.WithLabelValues("chat", "401")) != 1 {
		t.Errorf("http_requests_total{route=chat,code=401} != 1: the 401 went to route=unknown")
	}
	if testutil.ToFloat64(hr.WithLabelValues("chat", "429")) != 1 {
		t.Errorf("http_requests_total{route=chat,code=429} != 1: the 429 went to route=unknown")
	}
}

// TestResumedStreamNoTTFT: a stream whose home dies after 4 chunks is
// resumed on the entry node; the client's first token came from the home,
// so the continuation records no time to first token.
func TestResumedStreamNoTTFT(t *testing.T) {
	const delay = 400 * time.Millisecond
	a := newSessionNode(t, DefaultConfig(), nil)
	b := newSessionNode(t, DefaultConfig(), nil)
	dying := &dyingHome{h: b.srv.Handler(), after: 4}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay) // a slow home (a long queue or prefill)
		dying.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	a.sess.homes["s1"] = hs.URL
	a.sess.rehomeTo = ""
	body, _ := json.Marshal(map[string]any{"model": a.id, "prompt": "hello there", "max_tokens": 16, "temperature": 0,
		"ignore_eos": true, "stream": true, "session_id": "s1"})
	req, _ := http.NewRequest("POST", a.http.URL+"/v1/completions", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := a.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var clientTTFT time.Duration
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: {") && clientTTFT == 0 {
			clientTTFT = time.Since(t0)
		}
	}
	if dying.died.Load() != 1 {
		t.Fatalf("home did not die")
	}
	n, ttft := histSum(t, a.srv, "conclave:time_to_first_token_seconds")
	nb, _ := histSum(t, b.srv, "conclave:time_to_first_token_seconds")
	t.Logf("client TTFT %v; entry node observed %d TTFT sample(s) summing %.4fs; home observed %d", clientTTFT, n, ttft, nb)
	if n != 0 {
		t.Errorf("the continuation recorded %d time_to_first_token_seconds sample(s) (%.4fs) for a first token the client got from the home after %v", n, ttft, clientTTFT)
	}
}

// TestClientGoneCompletionIs499: a non-streamed completion whose client
// left is not answered (nobody reads it) and counts as 499, not 200.
func TestClientGoneCompletionIs499(t *testing.T) {
	var logs lockedBuffer
	cfg := DefaultConfig()
	cfg.Logger = jsonLogger(&logs)
	g := newGated(newEngine(t))
	defer close(g.release)
	f := newFixture(t, cfg, g)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", f.http.URL+"/v1/completions",
		strings.NewReader(fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":3}`, f.id)))
	req.Header.Set("Content-Type", "application/json")
	go func() { <-g.started; cancel() }()
	if resp, err := f.http.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("expected the client to abort")
	}
	waitFor(t, "the access log", func() bool { return strings.Contains(logs.String(), `"msg":"http request"`) })
	hr := f.srv.metrics.httpRequests
	if n := testutil.ToFloat64(hr.WithLabelValues("completions", "499")); n != 1 {
		t.Errorf("http_requests_total{route=completions,code=499} = %v (code=200: %v)", n, testutil.ToFloat64(hr.WithLabelValues("completions", "200")))
	}
}

// TestHalfClosedClientGetsItsAnswer: a client that only closes its sending
// side (net/http cannot tell it from one that left) still gets the JSON
// answer, not an empty 200.
func TestHalfClosedClientGetsItsAnswer(t *testing.T) {
	g := newGated(newEngine(t))
	defer close(g.release)
	f := newFixture(t, DefaultConfig(), g)
	cn, err := net.Dial("tcp", f.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	body := fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":3}`, f.id)
	fmt.Fprintf(cn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	<-g.started
	cn.(*net.TCPConn).CloseWrite()
	cn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, _ := io.ReadAll(cn)
	if !strings.HasPrefix(string(resp), "HTTP/1.1 200") || !strings.Contains(string(resp), `"choices"`) {
		t.Errorf("a half-closed client got:\n%q", resp)
	}
}

// TestClientGoneStreamIs499: a streamed completion whose client leaves
// mid-stream is counted and logged as 499, as a non-streamed one is; it
// was a 200, so an alert on http_requests_total never saw abandoned streams.
func TestClientGoneStreamIs499(t *testing.T) {
	var logs lockedBuffer
	cfg := DefaultConfig()
	cfg.Logger = jsonLogger(&logs)
	eng, hold := newHeldEngine(t, 3)
	g := newGated(eng)
	var once sync.Once
	g.cancelled = func() { once.Do(func() { close(hold) }) }
	f := newFixture(t, cfg, g)
	ctx, cancel := context.WithCancel(context.Background())
	resp := startStream(t, f, ctx, 100)
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before a token: %v", err)
		}
		if strings.Contains(line, `"content":"`) {
			break
		}
	}
	cancel()
	resp.Body.Close()
	waitFor(t, "the access log", func() bool { return strings.Contains(logs.String(), `"msg":"http request"`) })
	hr := f.srv.metrics.httpRequests
	if n := testutil.ToFloat64(hr.WithLabelValues("chat", "499")); n != 1 {
		t.Errorf("http_requests_total{route=chat,code=499} = %v (code=200: %v); log: %s", n, testutil.ToFloat64(hr.WithLabelValues("chat", "200")), logs.String())
	}
}
