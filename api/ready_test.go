package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/conclave-ai/conclave/model"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// lockedBuffer is a bytes.Buffer safe for a logger and a test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestModelReady: while Config.ModelReady is false /v1/models lists nothing,
// /v1/models/{id} is 404 and /ready is 503 "loading"; once it turns true the
// model is listed and /ready is 200.
func TestModelReady(t *testing.T) {
	var ready atomic.Bool
	cfg := DefaultConfig()
	cfg.ModelReady = ready.Load
	var logs lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f := newFixture(t, cfg, nil)
	list := func() []modelObject {
		t.Helper()
		r, body := f.do(t, "GET", "/v1/models", "")
		if r.StatusCode != 200 {
			t.Fatalf("/v1/models: %d %s", r.StatusCode, body)
		}
		var l struct {
			Object string        `json:"object"`
			Data   []modelObject `json:"data"`
		}
		if err := json.Unmarshal(body, &l); err != nil || l.Object != "list" || l.Data == nil {
			t.Fatalf("/v1/models: %v %s", err, body)
		}
		return l.Data
	}

	if d := list(); len(d) != 0 {
		t.Fatalf("not ready: /v1/models lists %v", d)
	}
	r, body := f.do(t, "GET", "/v1/models/"+f.id, "")
	checkError(t, r, body, 404, typeInvalidRequest, "model_not_found", "model")
	r, body = f.do(t, "GET", "/ready", "")
	if r.StatusCode != 503 || !strings.Contains(string(body), "loading") {
		t.Fatalf("/ready not ready: %d %s", r.StatusCode, body)
	}
	if r, _ := f.do(t, "GET", "/health", ""); r.StatusCode != 200 {
		t.Fatalf("/health not ready: %d", r.StatusCode)
	}
	// A probe's 503 is its answer, not an error to log at every probe (the
	// /health request on the same connection followed the /ready log line).
	if s := logs.String(); strings.Contains(s, "/ready") {
		t.Errorf("/ready's 503 logged above debug:\n%s", s)
	}

	ready.Store(true)
	if d := list(); len(d) != 1 || d[0].ID != f.id {
		t.Fatalf("ready: /v1/models lists %v", d)
	}
	if r, body := f.do(t, "GET", "/v1/models/"+f.id, ""); r.StatusCode != 200 {
		t.Fatalf("/v1/models/%s ready: %d %s", f.id, r.StatusCode, body)
	}
	if r, body := f.do(t, "GET", "/ready", ""); r.StatusCode != 200 || !strings.Contains(string(body), "ready") {
		t.Fatalf("/ready ready: %d %s", r.StatusCode, body)
	}
}

// TestServingRefusal: while Config.Serving reports an error (in a cluster:
// another model is live), generations and embeddings get 503
// model_not_live with its message; /v1/models and /health still answer.
// Once it reports nil they run.
func TestServingRefusal(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	cfg := DefaultConfig()
	cfg.Serving = func() error {
		if refuse.Load() {
			return errors.New("this node runs another model")
		}
		return nil
	}
	f := newFixture(t, cfg, nil)
	for _, c := range []struct{ path, body string }{
		{"/v1/chat/completions", chatBody(f.id, 2, false)},
		{"/v1/chat/completions", chatBody(f.id, 2, true)},
		{"/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":2}`, f.id)},
		{"/v1/embeddings", fmt.Sprintf(`{"model":%q,"input":"hi"}`, f.id)},
	} {
		r, body := f.do(t, "POST", c.path, c.body)
		checkError(t, r, body, 503, typeUnavailable, "model_not_live", "")
		if !strings.Contains(string(body), "another model") {
			t.Errorf("%s: %s, want the reason", c.path, body)
		}
	}
	if r, _ := f.do(t, "GET", "/v1/models", ""); r.StatusCode != 200 {
		t.Errorf("/v1/models: %d", r.StatusCode)
	}
	// /ready says why, not "loading": a load balancer or an operator
	// waiting for it would wait for good.
	if r, body := f.do(t, "GET", "/ready", ""); r.StatusCode != 503 || !strings.Contains(string(body), `"status":"model_not_live"`) || !strings.Contains(string(body), "another model") {
		t.Errorf("/ready: %d %s, want 503 model_not_live with the reason", r.StatusCode, body)
	}
	refuse.Store(false)
	if r, body := f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 2, false)); r.StatusCode != 200 {
		t.Errorf("serving again: %d %s", r.StatusCode, body)
	}
	if r, body := f.do(t, "GET", "/ready", ""); r.StatusCode != 200 {
		t.Errorf("/ready serving again: %d %s", r.StatusCode, body)
	}
}

// TestExpertUnavailableIs503: an expert runner failing with
// model.ErrExpertUnavailable (no replica answered, nothing to compute it
// from here) is a 503 to retry, not a 500.
func TestExpertUnavailableIs503(t *testing.T) {
	e := engineError(fmt.Errorf("engine: forward pass: %w", fmt.Errorf("dispatch: layer 0 expert 5: %w", model.ErrExpertUnavailable)))
	if e.Status != 503 || e.Code != "expert_unavailable" || e.Type != typeUnavailable {
		t.Errorf("%+v", e)
	}
}

// TestSessionHomeNotLive: a session's home that refuses with
// model_not_live (its map said otherwise a moment ago) makes the entry
// node re-home the session, as a draining home does, instead of passing
// the 503 on.
func TestSessionHomeNotLive(t *testing.T) {
	home := DefaultConfig()
	home.Serving = func() error { return errors.New("this node runs another model") }
	b := newSessionNode(t, home, nil)
	a := newSessionNode(t, DefaultConfig(), nil)
	a.sess.homes["s1"] = b.http.URL
	a.sess.rehomeTo = "" // re-home here
	resp, body := a.do(t, "POST", "/v1/completions", completionBody(a.id, "s1", false))
	if resp.StatusCode != 200 {
		t.Errorf("entry node answered %d: %s", resp.StatusCode, body)
	}
}

// TestReadyDrained: a node the cluster drained answers /ready 503
// "drained" (a load balancer kept sending it traffic on its 200), and
// still serves what reaches it.
func TestReadyDrained(t *testing.T) {
	var drained atomic.Bool
	cfg := DefaultConfig()
	cfg.Drained = drained.Load
	f := newFixture(t, cfg, nil)
	if r, body := f.do(t, "GET", "/ready", ""); r.StatusCode != 200 {
		t.Fatalf("/ready before the drain: %d %s", r.StatusCode, body)
	}
	drained.Store(true)
	if r, body := f.do(t, "GET", "/ready", ""); r.StatusCode != 503 || !strings.Contains(string(body), `"drained"`) {
		t.Fatalf("/ready once drained: %d %s", r.StatusCode, body)
	}
	if r, body := f.do(t, "POST", "/v1/chat/completions", chatBody(f.id, 3, false)); r.StatusCode != 200 {
		t.Fatalf("a request to the drained node: %d %s", r.StatusCode, body)
	}
}
