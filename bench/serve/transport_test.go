package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// streamServer streams max_tokens words, per words to a chunk, then a
// finish chunk, a usage chunk when usage is set, and [DONE]; it counts the
// TCP connections it accepts. It pauses a millisecond before [DONE], so the
// end of the body comes in a later packet, as it does from a real server.
// respond, when set, may answer request n itself.
type streamServer struct {
	srv     *httptest.Server
	per     int
	usage   bool
	conns   atomic.Int64
	n       atomic.Int64
	respond func(n int64, w http.ResponseWriter) bool
}

func newStreamServer(t *testing.T, per int, usage bool) *streamServer {
	s := &streamServer{per: per, usage: usage}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.handle))
	s.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *streamServer) handle(w http.ResponseWriter, r *http.Request) {
	var body requestBody
	json.NewDecoder(r.Body).Decode(&body)
	n := s.n.Add(1) - 1
	if s.respond != nil && s.respond(n, w) {
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	send := func(v any) {
		data, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", data)
		fl.Flush()
	}
	for i := 0; i < body.MaxTokens; i += s.per {
		var words strings.Builder
		for j := i; j < min(i+s.per, body.MaxTokens); j++ {
			fmt.Fprintf(&words, "w%d ", j)
		}
		send(map[string]any{"choices": []any{map[string]any{"index": 0, "text": words.String()}}})
	}
	send(map[string]any{"choices": []any{map[string]any{"index": 0, "text": "", "finish_reason": "length"}}})
	if s.usage {
		send(map[string]any{"choices": []any{}, "usage": map[string]any{"prompt_tokens": 3, "completion_tokens": body.MaxTokens}})
	}
	time.Sleep(time.Millisecond)
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}

func (s *streamServer) config(requests, tokens int) Config {
	c := DefaultConfig()
	c.URL, c.Model, c.Timeout = s.srv.URL, "m", time.Minute
	c.Endpoint = Completions
	c.Concurrency = []int{1}
	c.Requests, c.Output = requests, Fixed(tokens)
	return c
}

// TestConnectionReused: sequential requests of one worker share one
// keep-alive connection. The stream used to be closed at [DONE], before
// EOF, which costs the connection, so the next request paid for a new one
// inside its TTFT.
func TestConnectionReused(t *testing.T) {
	s := newStreamServer(t, 1, true)
	if _, err := Run(context.Background(), s.config(20, 4), Options{}); err != nil {
		t.Fatal(err)
	}
	if got := s.conns.Load(); got != 1 {
		t.Errorf("%d connections for %d sequential requests, want 1", got, s.n.Load())
	}
}

// TestResendTimedFromLastAttempt: a request whose pooled connection drops
// before any response is sent again by the transport; it is timed from
// the attempt that answered, and counted.
func TestResendTimedFromLastAttempt(t *testing.T) {
	s := newStreamServer(t, 1, true)
	const dropAfter = 500 * time.Millisecond
	s.respond = func(n int64, w http.ResponseWriter) bool {
		if n != 1 {
			return false
		}
		time.Sleep(dropAfter) // then the connection drops without an answer
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
		return true
	}
	rep, err := Run(context.Background(), s.config(2, 2), Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := rep.Levels[0]
	r := l.Results[1]
	if !r.OK() || r.Resent != 1 || l.Resent != 1 {
		t.Fatalf("request 1: %+v (level resent %d), want a success sent again once", r, l.Resent)
	}
	if r.TTFTMs >= float64(dropAfter.Milliseconds()) {
		t.Errorf("TTFT %.1f ms includes the dropped attempt's %v", r.TTFTMs, dropAfter)
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "1 requests were sent again") {
		t.Errorf("the report does not say a request was resent:\n%s", md.String())
	}
}

// TestOutputCountedInChunks: without usage.completion_tokens the output is
// counted in chunks, and the report says so (4 tokens a chunk here).
func TestOutputCountedInChunks(t *testing.T) {
	for _, usage := range []bool{true, false} {
		s := newStreamServer(t, 4, usage)
		c := s.config(2, 16)
		rep, err := Run(context.Background(), c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		l := rep.Levels[0]
		wantTokens, wantReported := 32, 2
		if !usage {
			wantTokens, wantReported = 8, 0 // chunks
		}
		if l.OutputTokens != wantTokens || l.OutputReported != wantReported {
			t.Errorf("usage %v: %d output tokens, %d reported; want %d, %d", usage, l.OutputTokens, l.OutputReported, wantTokens, wantReported)
		}
		var md bytes.Buffer
		if err := rep.WriteMarkdown(&md); err != nil {
			t.Fatal(err)
		}
		if has := strings.Contains(md.String(), "counted in SSE chunks"); has == usage {
			t.Errorf("usage %v: the report's note on chunk counts present = %v", usage, has)
		}
	}
}
