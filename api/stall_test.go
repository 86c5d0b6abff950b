package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/engine"
)

// floodEngine streams tokens, each with 20 alternatives, as fast as they are
// taken, until the request's context ends; cancelled is closed then.
type floodEngine struct {
	Engine
	sent      atomic.Int64
	cancelled chan struct{}
}

func newFlood(inner Engine) *floodEngine {
	return &floodEngine{Engine: inner, cancelled: make(chan struct{})}
}

func (e *floodEngine) Submit(ctx context.Context, r engine.Request) (<-chan engine.Event, error) {
	ch := make(chan engine.Event, 16)
	top := make([]engine.TokenLogprob, 20)
	for i := range top {
		top[i] = engine.TokenLogprob{Token: int32(100 + i), Logprob: -1}
	}
	go func() {
		defer close(ch)
		for {
			select {
			case ch <- engine.Event{HasToken: true, Token: 100, Logprob: -1, TopLogprobs: top}:
				e.sent.Add(1)
			case <-ctx.Done():
				close(e.cancelled)
				ch <- engine.Event{Done: true, FinishReason: engine.FinishCancel}
				return
			}
		}
	}()
	return ch, nil
}

// stalledStream opens a stream over a socket with a small receive buffer,
// reads the response headers and then stops reading, and waits until the
// server has stopped getting its events out (the socket buffers are full).
func stalledStream(t *testing.T, f *fixture, fl *floodEngine) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(f.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"stream":true,"logprobs":true,"top_logprobs":20}`, f.id)
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", resp, err)
	}
	// The engine's sends stop once the server's writes block.
	var last int64 = -1
	waitFor(t, "the server's writes to block", func() bool {
		n := fl.sent.Load()
		stalled := n == last
		last = n
		if !stalled {
			time.Sleep(50 * time.Millisecond)
		}
		return stalled
	})
	return conn
}

// TestDrainStalledClient: a client that stops reading its stream must not
// hold shutdown up. When Drain's deadline passes, the writes blocked on its
// connection fail and the handler returns at once.
func TestDrainStalledClient(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IOTimeout = 0 // only the drain can unblock the writes
	fl := newFlood(newEngine(t))
	f := newFixture(t, cfg, fl)
	stalledStream(t, f, fl)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	f.srv.Drain(ctx)
	f.srv.mu.Lock()
	n := f.srv.inflight
	f.srv.mu.Unlock()
	if n != 0 {
		t.Fatalf("Drain returned after %v with %d requests still in flight", time.Since(start), n)
	}
	<-fl.cancelled
}

// TestStalledReaderTimesOut: without any drain, a client that stops
// reading for IOTimeout loses its connection and its generation ends.
func TestStalledReaderTimesOut(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IOTimeout = 200 * time.Millisecond
	fl := newFlood(newEngine(t))
	f := newFixture(t, cfg, fl)
	stalledStream(t, f, fl)
	select {
	case <-fl.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled client's generation still runs")
	}
	waitFor(t, "no request in flight", func() bool {
		f.srv.mu.Lock()
		defer f.srv.mu.Unlock()
		return f.srv.inflight == 0
	})
}

// TestSlowBody: a body that does not arrive within IOTimeout gets 408 and
// frees the handler.
func TestSlowBody(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IOTimeout = 200 * time.Millisecond
	f := newFixture(t, cfg, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	checkError(t, resp, []byte(b.String()), http.StatusRequestTimeout, typeInvalidRequest, "request_timeout", "")
	waitFor(t, "no request in flight", func() bool {
		f.srv.mu.Lock()
		defer f.srv.mu.Unlock()
		return f.srv.inflight == 0
	})
}

// failingFlusher is a ResponseWriter whose flushes fail.
type failingFlusher struct{ http.ResponseWriter }

func (failingFlusher) FlushError() error { return errFlush }

var errFlush = errors.New("flush failed")

// TestFlushErrorsReachWriters: the request recorder and the deadline writer
// pass a failed flush on, so a stream's writer sees its client is gone.
func TestFlushErrorsReachWriters(t *testing.T) {
	rec := &recorder{ResponseWriter: failingFlusher{httptest.NewRecorder()}}
	dw := &deadlineWriter{ResponseWriter: rec, rc: http.NewResponseController(rec), stop: context.Background()}
	for name, w := range map[string]http.ResponseWriter{"recorder": rec, "deadlineWriter": dw} {
		if err := http.NewResponseController(w).Flush(); !errors.Is(err, errFlush) {
			t.Errorf("%s: Flush() = %v, want the underlying error", name, err)
		}
	}
}
