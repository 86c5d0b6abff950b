package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStreamHeadersAtOnce: a streamed request gets its response headers
// as soon as the engine has it, before any token (chat sends its role chunk
// then; completions had nothing to flush them until the first token).
func TestStreamHeadersAtOnce(t *testing.T) {
	g := newGated(newEngine(t))
	f := newFixture(t, DefaultConfig(), g)
	defer close(g.release)
	for _, tc := range []struct{ path, body string }{
		{"/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true}`, f.id)},
		{"/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":3,"stream":true}`, f.id)},
	} {
		req, err := http.NewRequest("POST", f.http.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		got := make(chan *http.Response, 1)
		go func() {
			resp, err := f.http.Client().Do(req)
			if err != nil {
				t.Error(err)
				resp = nil
			}
			got <- resp
		}()
		<-g.started // the engine holds the request: no token comes
		select {
		case resp := <-got:
			if resp != nil {
				if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
					t.Errorf("%s: %d %q", tc.path, resp.StatusCode, ct)
				}
				resp.Body.Close()
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: no response headers 10 s after the engine took the request", tc.path)
		}
	}
}
