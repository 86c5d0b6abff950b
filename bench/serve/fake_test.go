package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeOpenAI is an OpenAI-compatible streaming server for tests. It answers
// each request with max_tokens chunks of one word each ("w0 ", "w1 ", …), a
// finish chunk, a usage chunk when asked, and [DONE]. usage.prompt_tokens is
// the prompt's words plus promptOverhead, so tests can tell usage from word
// counts. It writes each chunk as soon as it can (no sleeps): tests assert
// structure, not timing.
type fakeOpenAI struct {
	t   *testing.T
	srv *httptest.Server

	// Set before the first request.
	models []string
	// respond, when set, may answer request n (0-based, in arrival order)
	// itself and return true; else the default stream is sent.
	respond func(n int, w http.ResponseWriter, body requestBody) bool
	// arrived, when set, receives each request's number on arrival.
	arrived chan int
	// gate, when set, holds each request until it is closed.
	gate chan struct{}

	mu          sync.Mutex
	n           int
	inflight    int
	maxInflight int
	bodies      []requestBody
	headers     []http.Header
}

const promptOverhead = 7

func newFake(t *testing.T) *fakeOpenAI {
	f := &fakeOpenAI{t: t, models: []string{"fake-model", "other"}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", f.listModels)
	mux.HandleFunc("POST /v1/chat/completions", f.complete)
	mux.HandleFunc("POST /v1/completions", f.complete)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeOpenAI) config() Config {
	c := DefaultConfig()
	c.URL = f.srv.URL
	c.Timeout = time.Minute
	return c
}

func (f *fakeOpenAI) listModels(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID     string `json:"id"`
		Object string `json:"object"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, id := range f.models {
		list.Data = append(list.Data, model{ID: id, Object: "model"})
	}
	json.NewEncoder(w).Encode(list)
}

func (f *fakeOpenAI) complete(w http.ResponseWriter, r *http.Request) {
	var body requestBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"error":{"type":"invalid_request_error","message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	n := f.n
	f.n++
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	f.bodies = append(f.bodies, body)
	f.headers = append(f.headers, r.Header.Clone())
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	if f.arrived != nil {
		f.arrived <- n
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-r.Context().Done():
			return
		}
	}
	if f.respond != nil && f.respond(n, w, body) {
		return
	}
	chat := r.URL.Path == "/v1/chat/completions"
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	send := func(v any) {
		data, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", data)
		fl.Flush()
	}
	if chat { // a role-only chunk first, as OpenAI sends: not output
		send(map[string]any{"object": "chat.completion.chunk", "choices": []any{
			map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}}}})
	}
	for i := range body.MaxTokens {
		word := fmt.Sprintf("w%d ", i)
		if chat {
			send(map[string]any{"object": "chat.completion.chunk", "choices": []any{
				map[string]any{"index": 0, "delta": map[string]any{"content": word}, "finish_reason": nil}}})
		} else {
			send(map[string]any{"object": "text_completion", "choices": []any{
				map[string]any{"index": 0, "text": word, "finish_reason": nil}}})
		}
	}
	send(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "length"}}})
	if body.StreamOptions.IncludeUsage {
		words := len(strings.Fields(body.Prompt))
		for _, m := range body.Messages {
			words += len(strings.Fields(m.Content))
		}
		send(map[string]any{"choices": []any{}, "usage": map[string]any{
			"prompt_tokens": words + promptOverhead, "completion_tokens": body.MaxTokens,
			"total_tokens": words + promptOverhead + body.MaxTokens}})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}

// answer is what the fake streams for max_tokens n.
func fakeAnswer(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "w%d ", i)
	}
	return b.String()
}

func (f *fakeOpenAI) snapshot() (bodies []requestBody, headers []http.Header, maxInflight int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]requestBody(nil), f.bodies...), append([]http.Header(nil), f.headers...), f.maxInflight
}
