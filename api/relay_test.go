package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCutTokenIDs(t *testing.T) {
	for _, tc := range []struct {
		name, in, rest string
		ids            []int32
		ok             bool
	}{
		{"ids", `{"id":"x","choices":[],"conclave_token_ids":[1,22,3]}`, `{"id":"x","choices":[]}`, []int32{1, 22, 3}, true},
		{"none", `{"id":"x","choices":[]}`, `{"id":"x","choices":[]}`, nil, false},
		{"in text only", `{"text":"\"conclave_token_ids\":[1]}"}`, `{"text":"\"conclave_token_ids\":[1]}"}`, nil, false},
		{"not last", `{"conclave_token_ids":[1],"id":"x"}`, `{"conclave_token_ids":[1],"id":"x"}`, nil, false},
		{"bad ids", `{"id":"x","conclave_token_ids":[1,"a"]}`, `{"id":"x","conclave_token_ids":[1,"a"]}`, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, rest, ok := cutTokenIDs([]byte(tc.in))
			if ok != tc.ok || string(rest) != tc.rest || !slices.Equal(ids, tc.ids) {
				t.Errorf("cutTokenIDs(%s) = %v, %s, %v; want %v, %s, %v", tc.in, ids, rest, ok, tc.ids, tc.rest, tc.ok)
			}
		})
	}
}

// dyingHome serves h until it has written after data events, then drops
// the connection mid-response, as a home killed with SIGKILL does.
type dyingHome struct {
	h     http.Handler
	after int
	died  atomic.Int32
}

func (d *dyingHome) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.h.ServeHTTP(&cutWriter{ResponseWriter: w, home: d, left: d.after}, r)
}

type cutWriter struct {
	http.ResponseWriter
	home *dyingHome
	left int
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if bytes.HasPrefix(b, []byte("data: ")) {
		if c.left == 0 {
			c.home.died.Add(1)
			panic(http.ErrAbortHandler)
		}
		c.left--
	}
	return c.ResponseWriter.Write(b)
}

func (c *cutWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// streamed is a stream as a client sees it.
type streamed struct {
	text     string
	ids      map[string]bool // chunk ids
	roles    int             // chat role chunks
	finish   string
	usage    *usage
	done     bool
	errEvent string
	raw      []string
}

func parseStream(t *testing.T, data []string) streamed {
	t.Helper()
	s := streamed{ids: map[string]bool{}, raw: data}
	for _, d := range data {
		if d == "[DONE]" {
			s.done = true
			continue
		}
		if strings.Contains(d, tokenIDsField) {
			t.Errorf("the client saw %s: %s", tokenIDsField, d)
		}
		var c struct {
			ID      string `json:"id"`
			Choices []struct {
				Text  *string `json:"text"`
				Delta *struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage          `json:"usage"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			t.Fatalf("chunk %s: %v", d, err)
		}
		if c.Error != nil {
			s.errEvent = d
			continue
		}
		s.ids[c.ID] = true
		if c.Usage != nil {
			s.usage = c.Usage
		}
		for _, ch := range c.Choices {
			if ch.Text != nil {
				s.text += *ch.Text
			}
			if ch.Delta != nil {
				if ch.Delta.Role != "" {
					s.roles++
				}
				if ch.Delta.Content != nil {
					s.text += *ch.Delta.Content
				}
			}
			if ch.FinishReason != nil {
				s.finish = *ch.FinishReason
			}
		}
	}
	return s
}

func postStream(t *testing.T, f *fixture, path, body string) streamed {
	t.Helper()
	req, _ := http.NewRequest("POST", f.http.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return parseStream(t, readSSE(t, resp))
}

func TestStreamResumesOnNewHome(t *testing.T) {
	mk := func(path string, req map[string]any) (string, string) {
		b, _ := json.Marshal(req)
		return path, string(b)
	}
	for _, tc := range []struct {
		name  string
		path  string
		req   map[string]any
		after int  // data events the dying home writes
		local bool // re-homed to the entry node itself
	}{
		{"completion greedy", "/v1/completions", map[string]any{"prompt": "hello there", "max_tokens": 20, "temperature": 0, "ignore_eos": true}, 4, false},
		{"completion resumed here", "/v1/completions", map[string]any{"prompt": "hello there", "max_tokens": 20, "temperature": 0, "ignore_eos": true}, 4, true},
		{"chat seeded sampling with usage", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": "tell me a story"}},
			"max_tokens": 24, "temperature": 0.9, "top_p": 0.95, "seed": 42, "ignore_eos": true, "stream_options": map[string]any{"include_usage": true}}, 6, false},
		{"chat seeded resumed here", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": "tell me a story"}},
			"max_tokens": 24, "temperature": 0.9, "seed": 7, "frequency_penalty": 0.5, "ignore_eos": true, "stream_options": map[string]any{"include_usage": true}}, 3, true},
		{"completion with logprobs", "/v1/completions", map[string]any{"prompt": "hello there", "max_tokens": 12, "temperature": 0, "ignore_eos": true, "logprobs": 2}, 5, false},
		{"dies after the first chunk", "/v1/completions", map[string]any{"prompt": "once upon", "max_tokens": 16, "temperature": 0.7, "seed": 3, "ignore_eos": true}, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newSessionNode(t, DefaultConfig(), nil)
			b := newSessionNode(t, DefaultConfig(), nil)
			c := newSessionNode(t, DefaultConfig(), nil)
			tc.req["model"] = a.id
			tc.req["stream"] = true
			path, body := mk(tc.path, tc.req)
			// The undisturbed run, served by c without a session.
			want := postStream(t, c.fixture, path, body)
			if !want.done || want.finish == "" {
				t.Fatalf("reference stream %q", want.raw)
			}

			tc.req["session_id"] = "s1"
			_, body = mk(tc.path, tc.req)
			home := &dyingHome{h: b.srv.Handler(), after: tc.after}
			hs := httptest.NewServer(home)
			t.Cleanup(hs.Close)
			a.sess.homes["s1"] = hs.URL
			a.sess.rehomeTo = c.http.URL
			if tc.local {
				a.sess.rehomeTo = ""
			}
			got := postStream(t, a.fixture, path, body)
			if home.died.Load() != 1 {
				t.Fatalf("the home did not die (%d)", home.died.Load())
			}
			if _, failed := a.sess.stats(); len(failed) != 1 || failed[0] != hs.URL {
				t.Errorf("re-homed away from %q, want [%s]", failed, hs.URL)
			}
			if got.text != want.text {
				t.Errorf("text across the seam\n%q\nwant\n%q\nevents %q", got.text, want.text, got.raw)
			}
			if !got.done || got.errEvent != "" || got.finish != want.finish {
				t.Errorf("done %v, error %s, finish %q (want %q)", got.done, got.errEvent, got.finish, want.finish)
			}
			if len(got.ids) != 1 {
				t.Errorf("chunk ids %v: the client should see one stream", got.ids)
			}
			if strings.Contains(tc.path, "chat") && got.roles != 1 {
				t.Errorf("%d role chunks", got.roles)
			}
			if want.usage != nil && (got.usage == nil || got.usage.CompletionTokens != want.usage.CompletionTokens ||
				got.usage.PromptTokens != want.usage.PromptTokens) {
				t.Errorf("usage %+v, want %+v", got.usage, want.usage)
			}
			served := c.eng.served() // the reference, then the continuation
			if tc.local {
				served = append([]string{""}, a.eng.served()...)
			}
			if len(served) != 2 || served[1] != "s1" {
				t.Errorf("the new home served %q", served)
			}
		})
	}
}

// A stop string that starts in the text the dead home streamed and ends in
// the continuation still stops the stream, at the same place.
func TestStreamResumeStopAcrossSeam(t *testing.T) {
	c := newSessionNode(t, DefaultConfig(), nil)
	base := map[string]any{"model": c.id, "prompt": "hello there", "max_tokens": 24, "temperature": 0, "ignore_eos": true, "stream": true}
	b, _ := json.Marshal(base)
	full := postStream(t, c.fixture, "/v1/completions", string(b))
	// A stop string of 3 ASCII characters from the full text, from its
	// 3rd character on: with the home dying after 1 to 3 data events, it
	// spans the seam or lies after it, and the text must end right before
	// it either way.
	stop := ""
	for i := 2; i+3 <= len(full.text) && stop == ""; i++ {
		cand := full.text[i : i+3]
		if strings.IndexFunc(cand, func(r rune) bool { return r < ' ' || r > '~' }) < 0 && strings.Index(full.text, cand) == i {
			stop = cand
		}
	}
	if stop == "" {
		t.Fatalf("no ASCII stop string in %q", full.text)
	}
	base["stop"] = []string{stop}
	b, _ = json.Marshal(base)
	want := postStream(t, c.fixture, "/v1/completions", string(b))
	if want.finish != "stop" {
		t.Fatalf("reference with stop %q: finish %q text %q", stop, want.finish, want.text)
	}
	for after := 1; after <= 3; after++ {
		a := newSessionNode(t, DefaultConfig(), nil)
		home := newSessionNode(t, DefaultConfig(), nil)
		dying := &dyingHome{h: home.srv.Handler(), after: after}
		hs := httptest.NewServer(dying)
		t.Cleanup(hs.Close)
		a.sess.homes["s1"] = hs.URL
		base["session_id"] = "s1"
		b, _ = json.Marshal(base)
		got := postStream(t, a.fixture, "/v1/completions", string(b))
		t.Logf("stop %q, home died after %d data events: %d", stop, after, dying.died.Load())
		if dying.died.Load() != 1 {
			t.Errorf("after %d events: the home did not die before the stop string", after)
		}
		if got.text != want.text || got.finish != "stop" || !got.done {
			t.Errorf("after %d events: text %q finish %q, want %q stop (home died %d times)", after, got.text, got.finish, want.text, dying.died.Load())
		}
	}
}

func TestResumeFieldIsInternal(t *testing.T) {
	f := newSessionNode(t, DefaultConfig(), nil)
	body := `{"model":"` + f.id + `","prompt":"hi","max_tokens":4,"stream":true,"conclave_resume":{"token_ids":[1,2]}}`
	resp, out := f.do(t, "POST", "/v1/completions", body)
	checkError(t, resp, out, 400, typeInvalidRequest, "", resumeField)
	// Nor is it forwarded to a session's home.
	home := newSessionNode(t, DefaultConfig(), nil)
	f.sess.homes["s9"] = home.http.URL
	// Under every spelling encoding/json reads as the field: letter case,
	// escapes, Unicode case folding (ſ is an s).
	for _, key := range []string{"conclave_resume", "CONCLAVE_RESUME", `conclave\u005fresume`, "conclave_reſume"} {
		body = `{"model":"` + f.id + `","prompt":"hi","max_tokens":4,"stream":true,"session_id":"s9","` + key + `":{"token_ids":[1,2]}}`
		resp, out = f.do(t, "POST", "/v1/completions", body)
		checkError(t, resp, out, 400, typeInvalidRequest, "", resumeField)
	}
	// Behind a byte order mark too (the decoder ignores one; the guard
	// once did not see past it), with the session in the body or a header.
	for _, hdr := range [][]string{nil, {"X-Session-ID", "s9"}} {
		body = "\uFEFF" + `{"model":"` + f.id + `","prompt":"hi","max_tokens":4,"stream":true,"session_id":"s9","conclave_resume":{"token_ids":[1,2]}}`
		resp, out = f.do(t, "POST", "/v1/completions", body, hdr...)
		checkError(t, resp, out, 400, typeInvalidRequest, "", resumeField)
	}
	if got := home.eng.served(); len(got) != 0 {
		t.Errorf("the home served a client's continuation: %q", got)
	}
	// Forwarded by a node: accepted, but the ids are checked like prompt ids
	// and must fit max_tokens.
	for _, bad := range []string{`{"token_ids":[-1]}`, `{"token_ids":[99999999]}`, `{"token_ids":[1,2,3,4,5]}`} {
		body := `{"model":"` + f.id + `","prompt":"hi","max_tokens":4,"stream":true,"conclave_resume":` + bad + `}`
		resp, out := f.do(t, "POST", "/v1/completions", body, HeaderForwarded, "1")
		checkError(t, resp, out, 400, typeInvalidRequest, "", resumeField)
	}
	body = `{"model":"` + f.id + `","prompt":"hi","max_tokens":4,"conclave_resume":{"token_ids":[1]}}`
	resp, out = f.do(t, "POST", "/v1/completions", body, HeaderForwarded, "1")
	checkError(t, resp, out, 400, typeInvalidRequest, "", resumeField)
	// Nothing left to generate: the continuation only finishes the stream.
	body = `{"model":"` + f.id + `","prompt":"hi","max_tokens":2,"stream":true,"ignore_eos":true,"stream_options":{"include_usage":true},"conclave_resume":{"token_ids":[5,6],"id":"cmpl-x","created":7}}`
	resp, out = f.do(t, "POST", "/v1/completions", body, HeaderForwarded, "1")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, out)
	}
	var data []string
	for _, l := range strings.Split(string(out), "\n") {
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			data = append(data, d)
		}
	}
	s := parseStream(t, data)
	if s.text != "" || s.finish != "length" || !s.done || s.usage == nil || s.usage.CompletionTokens != 2 || !s.ids["cmpl-x"] {
		t.Errorf("continuation with nothing left: %+v", s)
	}
	if got := f.eng.served(); len(got) != 0 {
		t.Errorf("the engine ran %q", got)
	}
}

// A non-streaming request whose home dies before answering is simply run
// again on the new home.
func TestNonStreamRerunsOnNewHome(t *testing.T) {
	a := newSessionNode(t, DefaultConfig(), nil)
	b := newSessionNode(t, DefaultConfig(), nil)
	c := newSessionNode(t, DefaultConfig(), nil)
	var died atomic.Int32
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The home starts generating, then dies before its response.
		b.srv.Handler().ServeHTTP(&abortWriter{ResponseWriter: w, died: &died}, r)
	}))
	t.Cleanup(dying.Close)
	a.sess.homes["s1"] = dying.URL
	a.sess.rehomeTo = c.http.URL
	body := completionBody(a.id, "s1", false)
	resp, got := a.do(t, "POST", "/v1/completions", body)
	if resp.StatusCode != 200 || died.Load() != 1 {
		t.Fatalf("status %d (home died %d): %s", resp.StatusCode, died.Load(), got)
	}
	_, want := c.do(t, "POST", "/v1/completions", completionBody(a.id, "", false))
	if completionText(got) != completionText(want) {
		t.Errorf("re-run text %q, want %q", completionText(got), completionText(want))
	}
	if served := c.eng.served(); len(served) != 2 || served[0] != "s1" {
		t.Errorf("new home served %q", served)
	}
}

// abortWriter drops the connection at the first write of a response.
type abortWriter struct {
	http.ResponseWriter
	died *atomic.Int32
}

func (w *abortWriter) WriteHeader(int) {
	w.died.Add(1)
	panic(http.ErrAbortHandler)
}

func (w *abortWriter) Write([]byte) (int, error) {
	w.WriteHeader(0)
	return 0, nil
}

// TestHomeDrainDeadlineResumes: when a session's home shuts down and its
// drain deadline cuts a request short, the entry node finishes it on a new
// home, as after a crash. The home ended the stream with finish_reason
// "abort" and [DONE] (and a non-streaming answer with a partial 200), which
// the entry relayed to the client as complete.
func TestHomeDrainDeadlineResumes(t *testing.T) {
	for _, stream := range []bool{true, false} {
		name := "non-stream"
		if stream {
			name = "stream"
		}
		t.Run(name, func(t *testing.T) {
			heldEng, hold := newHeldEngine(t, 6) // prefill and five tokens, then held
			a := newSessionNode(t, DefaultConfig(), nil)
			b := newSessionNode(t, DefaultConfig(), heldEng)
			c := newSessionNode(t, DefaultConfig(), nil)
			req := map[string]any{"model": a.id, "prompt": "hello there", "max_tokens": 24, "temperature": 0, "ignore_eos": true, "stream": stream}
			ref, _ := json.Marshal(req)
			req["session_id"] = "s1"
			body, _ := json.Marshal(req)
			a.sess.homes["s1"] = b.http.URL
			a.sess.rehomeTo = c.http.URL
			drain := func() {
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // the deadline has passed
				go b.srv.Drain(ctx)
				waitFor(t, "the home gave up", func() bool { return b.srv.stopCtx.Err() != nil })
				close(hold)
			}
			if stream {
				want := postStream(t, c.fixture, "/v1/completions", string(ref))
				got := parseStream(t, streamCutAfter(t, a.fixture, string(body), 3, drain))
				if got.text != want.text || !got.done || got.finish != want.finish || got.errEvent != "" {
					t.Errorf("stream %q (finish %q), want %q (finish %q)", got.text, got.finish, want.text, want.finish)
				}
			} else {
				_, want := c.do(t, "POST", "/v1/completions", string(ref))
				got := make(chan []byte, 1)
				go func() {
					resp, b := a.do(t, "POST", "/v1/completions", string(body))
					if resp.StatusCode != 200 {
						t.Errorf("status %d: %s", resp.StatusCode, b)
					}
					got <- b
				}()
				waitFor(t, "the home got the request", func() bool { return len(b.eng.served()) == 1 })
				drain()
				if g := <-got; completionText(g) != completionText(want) {
					t.Errorf("answer %q, want %q", completionText(g), completionText(want))
				}
			}
			if _, failed := a.sess.stats(); len(failed) != 1 || failed[0] != b.http.URL {
				t.Errorf("re-homed away from %q, want [%s]", failed, b.http.URL)
			}
		})
	}
}

// TestEntryDrainDeadline: when the node a client reached forwarded its
// request to the session's home and its own drain deadline cuts the relay
// short, the client is told, as one served there would be: a stream ends
// with a draining error event and [DONE] (it just stopped), a non-streaming
// request gets a draining 503 (it got an empty 200).
func TestEntryDrainDeadline(t *testing.T) {
	for _, stream := range []bool{true, false} {
		name := "non-stream"
		if stream {
			name = "stream"
		}
		t.Run(name, func(t *testing.T) {
			heldEng, hold := newHeldEngine(t, 6)
			a := newSessionNode(t, DefaultConfig(), nil)
			b := newSessionNode(t, DefaultConfig(), heldEng)
			t.Cleanup(func() { close(hold) }) // first: b's handler waits on it
			body, _ := json.Marshal(map[string]any{"model": a.id, "prompt": "hello there", "max_tokens": 24, "temperature": 0,
				"ignore_eos": true, "stream": stream, "session_id": "s1"})
			a.sess.homes["s1"] = b.http.URL
			drainA := func() {
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // the deadline has passed
				go a.srv.Drain(ctx)
				waitFor(t, "the entry gave up", func() bool { return a.srv.stopCtx.Err() != nil })
			}
			if stream {
				if got := parseStream(t, streamCutAfter(t, a.fixture, string(body), 3, drainA)); !got.done || !strings.Contains(got.errEvent, `"code":"draining"`) || got.finish != "" {
					t.Errorf("stream cut by the entry's drain: done %v, error %q, finish %q", got.done, got.errEvent, got.finish)
				}
				return
			}
			type answer struct {
				resp *http.Response
				body []byte
			}
			got := make(chan answer, 1)
			go func() {
				r, b := a.do(t, "POST", "/v1/completions", string(body))
				got <- answer{r, b}
			}()
			waitFor(t, "the home got the request", func() bool { return len(b.eng.served()) == 1 })
			drainA()
			ans := <-got
			checkError(t, ans.resp, ans.body, 503, typeUnavailable, "draining", "")
			if ans.resp.Header.Get(HeaderDraining) == "" {
				t.Errorf("the 503 is not marked %s", HeaderDraining)
			}
		})
	}
}

// streamCutAfter posts a streaming completion to f, reads its first n data
// events (what a held home sent), calls cut, and returns every data event
// the client got.
func streamCutAfter(t *testing.T, f *fixture, body string, n int, cut func()) []string {
	t.Helper()
	req, _ := http.NewRequest("POST", f.http.URL+"/v1/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	var data []string
	for len(data) < n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
			data = append(data, d)
		}
	}
	cut()
	return append(data, readSSE(t, &http.Response{Body: io.NopCloser(br)})...)
}

// completionText is a non-streaming completion's one choice's text, or the
// body itself, marked, when it holds no single choice.
func completionText(b []byte) string {
	var r struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
		return "(no choice) " + string(b)
	}
	return r.Choices[0].Text
}

// TestRelayedClientGoneIs499: the entry node counts a relayed stream whose
// client left mid-way as 499, as the home and a stream served locally do.
func TestRelayedClientGoneIs499(t *testing.T) {
	heldEng, hold := newHeldEngine(t, 3)
	var logs lockedBuffer
	cfg := DefaultConfig()
	cfg.Logger = jsonLogger(&logs)
	a := newSessionNode(t, cfg, nil)
	b := newSessionNode(t, DefaultConfig(), heldEng)
	a.sess.homes["s1"] = b.http.URL
	body, _ := json.Marshal(map[string]any{"model": a.id, "prompt": "hello there", "max_tokens": 24, "stream": true, "session_id": "s1"})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", a.http.URL+"/v1/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before a token: %v", err)
		}
		if strings.HasPrefix(line, "data: {") {
			break
		}
	}
	cancel()
	resp.Body.Close()
	close(hold)
	waitFor(t, "the entry's access log", func() bool { return strings.Contains(logs.String(), `"msg":"http request"`) })
	hr := a.srv.metrics.httpRequests
	if n := testutil.ToFloat64(hr.WithLabelValues("completions", "499")); n != 1 {
		t.Errorf("entry: http_requests_total{route=completions,code=499} = %v (code=200: %v); log: %s", n,
			testutil.ToFloat64(hr.WithLabelValues("completions", "200")), logs.String())
	}
}
