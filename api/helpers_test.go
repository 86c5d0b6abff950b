package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/model/tokenizer"
)

// tiny is the synthesized tiny model, built once per test binary.
var tiny struct {
	once sync.Once
	dir  string
	f    *gguf.File
	w    *model.Weights
	tok  *tokenizer.Tokenizer
	id   string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tiny.f != nil {
		tiny.f.Close()
	}
	if tiny.dir != "" {
		os.RemoveAll(tiny.dir)
	}
	os.Exit(code)
}

func tinyModel(t testing.TB) (*model.Weights, *tokenizer.Tokenizer, string) {
	t.Helper()
	tiny.once.Do(func() {
		cfg, err := synth.Preset("tiny")
		if err != nil {
			tiny.err = err
			return
		}
		cfg.Type = kernels.Q8_0
		if tiny.dir, err = os.MkdirTemp("", "conclave-api-test"); err != nil {
			tiny.err = err
			return
		}
		path := filepath.Join(tiny.dir, "tiny.gguf")
		if tiny.err = synth.Write(cfg, path); tiny.err != nil {
			return
		}
		if tiny.f, tiny.err = gguf.Open(path); tiny.err != nil {
			return
		}
		if tiny.w, tiny.err = model.Load(tiny.f); tiny.err != nil {
			return
		}
		if tiny.tok, tiny.err = model.LoadTokenizer(tiny.f); tiny.err != nil {
			return
		}
		tiny.id, tiny.err = tiny.f.StringOr("general.name", "tiny")
	})
	if tiny.err != nil {
		t.Fatal(tiny.err)
	}
	return tiny.w, tiny.tok, tiny.id
}

func testEngineConfig() engine.Config {
	c := engine.DefaultConfig()
	c.MaxBatchTokens = 64
	c.MaxRunning = 16
	c.MaxQueue = 64
	c.PrefillChunk = 32
	c.KVBlocks = 256
	c.AdmitHeadroom = 1
	return c
}

// newEngine starts the real engine on the tiny model.
func newEngine(t testing.TB) *engine.Engine {
	t.Helper()
	w, tok, _ := tinyModel(t)
	pool := kernels.NewPool(2)
	e, err := engine.New(testEngineConfig(), w, pool, tok.IsEOG)
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		pool.Close()
	})
	return e
}

// newHeldEngine starts the real engine on the tiny model with its routed
// experts behind hold: after the first free forward passes, every pass
// waits until hold is closed, so a request stays in flight, generating
// nothing more, for as long as a test needs, however fast the machine.
func newHeldEngine(t testing.TB, free int32) (*engine.Engine, chan struct{}) {
	t.Helper()
	w, tok, _ := tinyModel(t)
	pool := kernels.NewPool(2)
	hold := make(chan struct{})
	h := &heldExperts{inner: &model.LocalExperts{W: w, Pool: pool}, hold: hold}
	h.free.Store(free)
	e, err := engine.New(testEngineConfig(), w, pool, tok.IsEOG, engine.WithExperts(h))
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		pool.Close()
	})
	return e, hold
}

// heldExperts lets free forward passes through, then computes the experts
// only once hold is closed.
type heldExperts struct {
	inner model.ExpertRunner
	hold  chan struct{}
	free  atomic.Int32
}

func (h *heldExperts) RunExperts(ctx context.Context, layer int, groups []model.ExpertGroup) error {
	if layer == 0 && h.free.Add(-1) < 0 {
		<-h.hold
	}
	return h.inner.RunExperts(ctx, layer, groups)
}

// testLogger routes the server's logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

type fixture struct {
	srv  *Server
	http *httptest.Server
	eng  Engine
	tok  *tokenizer.Tokenizer
	id   string
}

// newFixture serves the API over eng (the real engine when nil) on an
// httptest server.
func newFixture(t testing.TB, cfg Config, eng Engine) *fixture {
	t.Helper()
	w, tok, id := tinyModel(t)
	if eng == nil {
		eng = newEngine(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	hs := httptest.NewUnstartedServer(nil)
	if len(cfg.PeerKey) > 0 && cfg.PeerAddr == "" {
		cfg.PeerAddr = hs.Listener.Addr().String() // peers' signatures name it
	}
	s, err := New(cfg, eng, tok, ModelInfo{ID: id, Context: w.Ctx, Dim: w.Dim})
	if err != nil {
		hs.Close()
		t.Fatal(err)
	}
	hs.Config.Handler = s.Handler()
	hs.Start()
	t.Cleanup(hs.Close)
	return &fixture{srv: s, http: hs, eng: eng, tok: tok, id: id}
}

// post sends a JSON body and returns the response with its body read.
func (f *fixture) do(t testing.TB, method, path, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.http.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// waitFor polls cond until it holds or the deadline passes. It is for
// conditions owned by another goroutine (the engine's counters) that offer
// no notification.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// gatedEngine passes requests to a real engine but holds each stream's
// events until the test releases them, so tests can keep requests in
// flight deterministically.
type gatedEngine struct {
	Engine
	started   chan string   // a request id per Submit that reached the engine
	release   chan struct{} // closed to let events through
	cancelled func()        // if set, called when a held request's context ends
}

func newGated(inner Engine) *gatedEngine {
	return &gatedEngine{Engine: inner, started: make(chan string, 64), release: make(chan struct{})}
}

func (g *gatedEngine) Submit(ctx context.Context, r engine.Request) (<-chan engine.Event, error) {
	in, err := g.Engine.Submit(ctx, r)
	if err != nil {
		return nil, err
	}
	out := make(chan engine.Event)
	go func() {
		defer close(out)
		select {
		case <-g.release:
		case <-ctx.Done():
			if g.cancelled != nil {
				g.cancelled()
			}
		}
		for ev := range in {
			out <- ev
		}
	}()
	g.started <- r.ID
	return out, nil
}
