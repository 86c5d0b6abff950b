package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/internal/peersig"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeSessions is an in-memory SessionRouter: homes maps a session to a
// target ("" is local); Rehome moves it to rehomeTo.
type fakeSessions struct {
	mu       sync.Mutex
	homes    map[string]string
	rehomeTo string
	routes   int
	failed   []string      // targets passed to Rehome
	delay    time.Duration // each Route takes this long (a Raft write)
}

func (f *fakeSessions) Route(_ context.Context, id, _ string) (bool, string, error) {
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes++
	t := f.homes[id]
	return t == "", t, nil
}

func (f *fakeSessions) Rehome(_ context.Context, id, _, failed string) (bool, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, failed)
	f.homes[id] = f.rehomeTo
	return f.rehomeTo == "", f.rehomeTo, nil
}

func (f *fakeSessions) stats() (int, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes, append([]string(nil), f.failed...)
}

// countingEngine records the session of every request that reached it.
type countingEngine struct {
	Engine
	mu       sync.Mutex
	sessions []string
}

func (c *countingEngine) Submit(ctx context.Context, r engine.Request) (<-chan engine.Event, error) {
	c.mu.Lock()
	c.sessions = append(c.sessions, r.SessionID)
	c.mu.Unlock()
	return c.Engine.Submit(ctx, r)
}

func (c *countingEngine) served() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.sessions...)
}

// sessionNode is one API server with its own engine and session router.
type sessionNode struct {
	*fixture
	eng  *countingEngine
	sess *fakeSessions
}

func newSessionNode(t *testing.T, cfg Config, inner Engine) *sessionNode {
	t.Helper()
	if inner == nil {
		inner = newEngine(t)
	}
	n := &sessionNode{eng: &countingEngine{Engine: inner}, sess: &fakeSessions{homes: map[string]string{}}}
	cfg.Sessions = n.sess
	n.fixture = newFixture(t, cfg, n.eng)
	return n
}

func completionBody(id, session string, stream bool) string {
	b, _ := json.Marshal(map[string]any{"model": id, "prompt": "hello there", "max_tokens": 4,
		"temperature": 0, "session_id": session, "stream": stream})
	return string(b)
}

func TestSessionForwarding(t *testing.T) {
	a := newSessionNode(t, DefaultConfig(), nil)
	b := newSessionNode(t, DefaultConfig(), nil)
	a.sess.homes["s1"] = b.http.URL
	// b's own map says a: the forwarded header must stop a second hop.
	b.sess.homes["s1"] = a.http.URL

	t.Run("body session forwarded to its home", func(t *testing.T) {
		resp, body := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", false))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if got := b.eng.served(); len(got) != 1 || got[0] != "s1" {
			t.Errorf("home served %q, want [s1]", got)
		}
		if got := a.eng.served(); len(got) != 0 {
			t.Errorf("forwarding node served %q", got)
		}
		if routes, _ := b.sess.stats(); routes != 0 {
			t.Errorf("home routed a forwarded request %d times", routes)
		}
		if ids := resp.Header.Values("X-Request-ID"); len(ids) != 1 {
			t.Errorf("X-Request-ID %q, want one", ids)
		}
	})
	t.Run("header session forwarded", func(t *testing.T) {
		body := `{"model":"` + a.id + `","prompt":"hi","max_tokens":2}`
		resp, out := a.do(t, "POST", "/v1/completions", body, "X-Session-ID", "s1")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		if got := b.eng.served(); len(got) != 2 {
			t.Errorf("home served %q, want 2 requests", got)
		}
	})
	t.Run("compressed body forwarded decoded", func(t *testing.T) {
		body := `{"model":"` + a.id + `","prompt":"hi","max_tokens":2}`
		resp, out := a.do(t, "POST", "/v1/completions", gzipped(t, body), "X-Session-ID", "s1", "Content-Encoding", "gzip")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		resp, out = a.do(t, "POST", "/v1/completions", gzipped(t, completionBody(a.id, "s1", true)), "Content-Encoding", "gzip")
		if resp.StatusCode != 200 || !strings.Contains(string(out), "data: [DONE]") {
			t.Fatalf("stream: status %d: %s", resp.StatusCode, out)
		}
		if got := b.eng.served(); len(got) != 4 {
			t.Errorf("home served %q, want 4 requests", got)
		}
		// Behind a byte order mark, the body's session still routes.
		resp, out = a.do(t, "POST", "/v1/completions", "\uFEFF"+completionBody(a.id, "s1", false))
		if resp.StatusCode != 200 {
			t.Fatalf("BOM: status %d: %s", resp.StatusCode, out)
		}
		if got := b.eng.served(); len(got) != 5 {
			t.Errorf("home served %q, want 5 requests", got)
		}
	})
	t.Run("no session stays local without routing", func(t *testing.T) {
		before, _ := a.sess.stats()
		body := `{"model":"` + a.id + `","prompt":"hi","max_tokens":2}`
		if resp, out := a.do(t, "POST", "/v1/completions", body); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		if after, _ := a.sess.stats(); after != before {
			t.Errorf("routed a request without a session")
		}
		if got := a.eng.served(); len(got) != 1 {
			t.Errorf("local node served %q, want 1", got)
		}
	})
}

func TestSessionStreamPassesThrough(t *testing.T) {
	cfg := DefaultConfig()
	cfg.KeepAlive = 5e6 // 5 ms: comment lines flow while the home's engine is held
	gated := newGated(newEngine(t))
	b := newSessionNode(t, cfg, gated)
	a := newSessionNode(t, DefaultConfig(), nil)
	a.sess.homes["s1"] = b.http.URL

	req, _ := http.NewRequest("POST", a.http.URL+"/v1/completions", strings.NewReader(completionBody(a.id, "s1", true)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	<-gated.started
	rd := bufio.NewReader(resp.Body)
	// The home's generation is held: whatever arrives now was relayed
	// before the response ended, i.e. not buffered by the forwarding node.
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ":") {
		t.Fatalf("first line %q, %v; want a keep-alive comment", line, err)
	}
	close(gated.release)
	var data []string
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			break
		}
		if d, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
			data = append(data, d)
		}
	}
	if len(data) < 2 || data[len(data)-1] != "[DONE]" {
		t.Fatalf("stream data %q", data)
	}
	if got := b.eng.served(); len(got) != 1 {
		t.Errorf("home served %q", got)
	}
}

func TestSessionRehome(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // connection refused from now on

	t.Run("to another node", func(t *testing.T) {
		a := newSessionNode(t, DefaultConfig(), nil)
		b := newSessionNode(t, DefaultConfig(), nil)
		a.sess.homes["s1"] = deadURL
		a.sess.rehomeTo = b.http.URL
		resp, body := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", true))
		if resp.StatusCode != 200 || !strings.Contains(string(body), "[DONE]") {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if _, failed := a.sess.stats(); len(failed) != 1 || failed[0] != deadURL {
			t.Errorf("rehomed away from %q, want [%s]", failed, deadURL)
		}
		if got := b.eng.served(); len(got) != 1 {
			t.Errorf("new home served %q", got)
		}
	})
	t.Run("to this node", func(t *testing.T) {
		a := newSessionNode(t, DefaultConfig(), nil)
		a.sess.homes["s1"] = deadURL
		resp, body := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", false))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if got := a.eng.served(); len(got) != 1 {
			t.Errorf("served %q locally, want 1", got)
		}
	})
	t.Run("away from a draining home", func(t *testing.T) {
		a := newSessionNode(t, DefaultConfig(), nil)
		b := newSessionNode(t, DefaultConfig(), nil)
		if err := b.srv.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		a.sess.homes["s1"] = b.http.URL
		resp, body := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", false))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if _, failed := a.sess.stats(); len(failed) != 1 || failed[0] != b.http.URL {
			t.Errorf("rehomed away from %q, want [%s]", failed, b.http.URL)
		}
		if got := a.eng.served(); len(got) != 1 {
			t.Errorf("served %q locally, want 1", got)
		}
	})
	t.Run("every home unreachable", func(t *testing.T) {
		a := newSessionNode(t, DefaultConfig(), nil)
		a.sess.homes["s1"] = deadURL
		a.sess.rehomeTo = deadURL
		resp, body := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", false))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if _, failed := a.sess.stats(); len(failed) != maxRehomes {
			t.Errorf("%d rehomes, want %d", len(failed), maxRehomes)
		}
		if got := a.eng.served(); len(got) != 1 {
			t.Errorf("served %q locally, want 1", got)
		}
	})
}

// TestSessionInvalidRequestNotRouted: a request that fails validation is
// answered without routing its session (a Raft write in a cluster).
func TestSessionInvalidRequestNotRouted(t *testing.T) {
	n := newSessionNode(t, DefaultConfig(), nil)
	for _, tc := range []struct {
		path, body string
		hdr        []string
		status     int
	}{
		{"/v1/chat/completions", `{"model":"nope","session_id":"s1","messages":[{"role":"user","content":"hi"}]}`, nil, 404},
		{"/v1/completions", `{"model":"` + n.id + `","session_id":"s2","prompt":"hi","max_tokens":-1}`, nil, 400},
		{"/v1/chat/completions", `[1]`, []string{"X-Session-ID", "s3"}, 400},
		{"/v1/completions", `{"model":"` + n.id + `","prompt":"hi","temperature":9}`, []string{"X-Session-ID", "s4"}, 400},
	} {
		resp, body := n.do(t, "POST", tc.path, tc.body, tc.hdr...)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s %s: %d %s", tc.path, tc.body, resp.StatusCode, body)
		}
	}
	if routes, _ := n.sess.stats(); routes != 0 {
		t.Fatalf("%d sessions routed for requests that all failed validation", routes)
	}
	if resp, body := n.do(t, "POST", "/v1/completions", completionBody(n.id, "s5", false)); resp.StatusCode != 200 {
		t.Fatalf("valid request: %d %s", resp.StatusCode, body)
	}
	if routes, _ := n.sess.stats(); routes != 1 {
		t.Fatalf("valid request: %d routes, want 1", routes)
	}
}

// peerHeaders are the headers of a request a node forwards to the node at
// host for client, signed with key.
func peerHeaders(key []byte, host, uri, body, client string) []string {
	h := http.Header{}
	peersig.Sign(h, key, time.Now(), http.MethodPost, uri, peersig.BodyDigest([]byte(body)), client, host)
	return []string{HeaderForwarded, "1", peersig.Header, h.Get(peersig.Header), HeaderClient, client}
}

// TestPeerClientIdentity: a request forwarded with a valid peer signature
// counts against the client the entry node named (HeaderClient), not
// against the entry node; a forged, replayed or re-bodied one does not.
func TestPeerClientIdentity(t *testing.T) {
	key := []byte("peer key")
	cfg := DefaultConfig()
	cfg.MaxConcurrentPerKey, cfg.PeerKey = 1, key
	g := newGated(newEngine(t))
	f := newFixture(t, cfg, g)
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(g.release) }) }) // before the server closes, should a check fail
	body := `{"model":"` + f.id + `","prompt":"hi","max_tokens":2}`
	self := f.http.Listener.Addr().String()
	peer := func(client string, key []byte) []string {
		return peerHeaders(key, self, "/v1/completions", body, client)
	}
	codes := make(chan int, 8)
	sendBody := func(body string, hdr []string) {
		go func() {
			resp, _ := f.do(t, "POST", "/v1/completions", body, hdr...)
			codes <- resp.StatusCode
		}()
	}
	send := func(hdr []string) { sendBody(body, hdr) }
	// admitted: the request reached the engine (it holds its client's slot).
	admitted := func(what string) {
		t.Helper()
		select {
		case <-g.started:
		case c := <-codes:
			t.Fatalf("%s: refused with %d", what, c)
		}
	}
	refusedWith := func(what string, code int) {
		t.Helper()
		select {
		case <-g.started:
			t.Fatalf("%s: admitted, want %d", what, code)
		case c := <-codes:
			if c != code {
				t.Fatalf("%s: %d, want %d", what, c, code)
			}
		}
	}
	refused := func(what string) { t.Helper(); refusedWith(what, http.StatusTooManyRequests) }
	send(nil)
	admitted("a direct request (ip:127.0.0.1)")
	send(peer("ip:10.0.0.9", []byte("guess")))
	refused("a forged peer request naming another client")
	send(peerHeaders(key, "10.9.9.9:8080", "/v1/completions", body, "ip:10.0.0.8"))
	refused("a peer's request signed for another node")
	send(peer("ip:10.0.0.1", key))
	admitted("a peer's request for client 10.0.0.1")
	send(peer("ip:10.0.0.2", key))
	admitted("a peer's request for client 10.0.0.2")
	send(peer("ip:10.0.0.1", key))
	refused("a second request of client 10.0.0.1")
	// A valid signature on another body: the body read is checked (after
	// the signature's nonce was spent).
	replayed := peer("ip:10.0.0.7", key)
	other := strings.Replace(body, `"hi"`, `"bye"`, 1)
	sendBody(other, replayed)
	refusedWith("a signed request with another body", http.StatusUnauthorized)
	// The same signature again, now with its own body: a replay is not a
	// peer's request, so it counts as its sender's (127.0.0.1, busy).
	send(replayed)
	refused("a replayed signature")
	release.Do(func() { close(g.release) })
	for range 3 {
		if c := <-codes; c != 200 {
			t.Fatalf("a held request ended with %d", c)
		}
	}
}

// TestForwardCarriesClient: the entry node names its client to the home in
// a signed request, and drops what a client sent in the peer headers.
func TestForwardCarriesClient(t *testing.T) {
	key := []byte("peer key")
	var got http.Header
	var gotURI string
	var gotBody []byte
	var mu sync.Mutex
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, gotURI, gotBody = r.Header.Clone(), r.URL.RequestURI(), b
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"x","object":"text_completion","created":1,"model":"m","choices":[]}`))
	}))
	defer home.Close()
	forged := peerHeaders([]byte("forged"), "127.0.0.1:1", "/v1/completions", "{}", "ip:6.6.6.6")
	for _, tc := range []struct {
		key        []byte
		wantClient string
		stream     bool // through the stream relay, else the proxy
	}{
		{key, "ip:127.0.0.1", false},
		{key, "ip:127.0.0.1", true},
		{nil, "", false}, // an entry without a key passes on no signature, nor the client's
	} {
		cfg := DefaultConfig()
		cfg.PeerKey = tc.key
		a := newSessionNode(t, cfg, nil)
		a.sess.homes["s1"] = home.URL
		resp, out := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", tc.stream), forged[2:]...)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
		mu.Lock()
		if got.Get(HeaderClient) != tc.wantClient || got.Get(HeaderForwarded) == "" {
			t.Errorf("entry key %q, stream %v: home got %s=%q %s=%q", tc.key, tc.stream, HeaderClient, got.Get(HeaderClient), HeaderForwarded, got.Get(HeaderForwarded))
		}
		sig, signed := peersig.Parse(got)
		switch {
		case tc.key == nil && signed:
			t.Errorf("an entry without a key passed on a signature: %q", got.Get(peersig.Header))
		case tc.key != nil:
			v := peersig.NewVerifier(tc.key, nil)
			if err := v.Verify(sig, http.MethodPost, gotURI, peersig.BodyDigest(gotBody), tc.wantClient, home.Listener.Addr().String()); !signed || err != nil {
				t.Errorf("stream %v: the home cannot verify the forwarded request: signed %v, %v", tc.stream, signed, err)
			}
		}
		mu.Unlock()
	}
}

// TestForwardedMetrics: a request forwarded to its session's home is one
// client request in http_requests_total (the entry node's); the home counts
// it in forwarded_requests_total, and its latencies include the entry
// node's routing time.
func TestForwardedMetrics(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PeerKey = []byte("the-cluster-peer-key-0123456789abcdef")
	a := newSessionNode(t, cfg, nil)
	b := newSessionNode(t, cfg, nil)
	a.sess.homes["s1"] = b.http.URL
	const routing = 60 * time.Millisecond
	a.sess.delay = routing
	for _, stream := range []bool{false, true} {
		resp, body := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", stream))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
	if got := b.eng.served(); len(got) != 2 {
		t.Fatalf("home served %q", got)
	}
	count := func(v *prometheus.CounterVec) float64 {
		return testutil.ToFloat64(v.WithLabelValues("completions", "200"))
	}
	// A node counts a request once its handler returns, which may be after
	// the client has read the response.
	waitFor(t, "the counts", func() bool {
		n, _ := histSum(t, b.srv, "conclave:e2e_request_latency_seconds")
		return count(b.srv.metrics.forwardedRequests)+count(b.srv.metrics.httpRequests) >= 2 && n >= 2 &&
			count(a.srv.metrics.httpRequests) >= 2
	})
	if a1, b1, bf := count(a.srv.metrics.httpRequests), count(b.srv.metrics.httpRequests), count(b.srv.metrics.forwardedRequests); a1 != 2 || b1 != 0 || bf != 2 {
		t.Errorf("http_requests_total entry %v home %v, forwarded_requests_total home %v; want 2, 0, 2", a1, b1, bf)
	}
	for _, name := range []string{"conclave:time_to_first_token_seconds", "conclave:e2e_request_latency_seconds"} {
		n, sum := histSum(t, b.srv, name)
		if n != 2 || sum < 2*routing.Seconds() {
			t.Errorf("home %s: %d samples summing %.3fs, want 2 of at least the entry's %v each", name, n, sum, routing)
		}
		if n, _ := histSum(t, a.srv, name); n != 0 {
			t.Errorf("entry %s: %d samples, want none (the home observes)", name, n)
		}
	}
}

// TestForwardedHeadersFromClient: a client that sends the forwarding
// headers itself, on a node without a cluster key (nothing to verify them
// with), is counted as a client and its latency is its own.
func TestForwardedHeadersFromClient(t *testing.T) {
	var logs lockedBuffer
	cfg := DefaultConfig()
	cfg.Logger = jsonLogger(&logs)
	f := newFixture(t, cfg, newEngine(t))
	req, _ := http.NewRequest("POST", f.http.URL+"/v1/completions", strings.NewReader(completionBody(f.id, "", false)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderForwarded, "1")
	req.Header.Set(HeaderWaited, "599000000")
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, "the access log", func() bool { return strings.Contains(logs.String(), `"msg":"http request"`) })
	if n := testutil.ToFloat64(f.srv.metrics.httpRequests.WithLabelValues("completions", "200")); n != 1 {
		t.Errorf("http_requests_total %v, want 1", n)
	}
	if n, sum := histSum(t, f.srv, "conclave:e2e_request_latency_seconds"); n != 1 || sum > 60 {
		t.Errorf("e2e: %d samples summing %.1fs: the client's header was believed", n, sum)
	}
}
