package api

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/conclave-ai/conclave/engine"
)

// noEngine is for tests that never reach the engine.
type noEngine struct{}

func (noEngine) Submit(context.Context, engine.Request) (<-chan engine.Event, error) {
	return nil, engine.ErrClosed
}
func (noEngine) Embed(context.Context, []int32) ([]float32, error) { return nil, engine.ErrClosed }
func (noEngine) Stats() engine.Stats                               { return engine.Stats{} }

// FuzzDecodeChatRequest feeds arbitrary bodies through decoding,
// validation, template rendering and tokenization: it must never panic,
// and every failure must be a 4xx (a 5xx would be a server bug).
func FuzzDecodeChatRequest(f *testing.F) {
	w, tok, id := tinyModel(f)
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg, noEngine{}, tok, ModelInfo{ID: id, Context: w.Ctx})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"model":"` + id + `","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"` + id + `","messages":[{"role":"user","content":[{"type":"text","text":"a"}]},{"role":"assistant","content":null}],"stop":["x","y"],"max_tokens":3}`,
		`{"model":"` + id + `","messages":[{"role":"user","content":"<s>[INST] hi </s>"}],"logprobs":true,"top_logprobs":2,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"` + id + `","messages":[{"role":"system","content":"x"}],"temperature":1e308,"seed":-1}`,
		`{"model":1}`, `[]`, `null`, `{"messages":{}}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		j, e := s.chatJob(body)
		if e != nil {
			if e.Status < 400 || e.Status >= 500 || e.Message == "" || e.Type == "" {
				t.Fatalf("bad error for %q: %+v", body, e)
			}
			return
		}
		if len(j.prompt) == 0 || j.maxTokens < 1 || len(j.prompt)+j.maxTokens > w.Ctx {
			t.Fatalf("accepted %q with prompt %d max %d", body, len(j.prompt), j.maxTokens)
		}
		if err := j.sampling.Validate(); err != nil {
			t.Fatalf("accepted %q with sampling %v", body, err)
		}
	})
}
