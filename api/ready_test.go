package api

import (
	"bytes"
	"encoding/json"
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
