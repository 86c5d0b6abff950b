package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/conclave-ai/conclave/engine"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scriptEngine answers every request with the same tokens, each with a
// logprob, then finishes.
type scriptEngine struct{ toks []int32 }

func (e *scriptEngine) Submit(ctx context.Context, r engine.Request) (<-chan engine.Event, error) {
	ch := make(chan engine.Event, len(e.toks)+1)
	go func() {
		defer close(ch)
		n := 0
		for i, t := range e.toks {
			if ctx.Err() != nil || i >= r.MaxTokens {
				break
			}
			ch <- engine.Event{HasToken: true, Token: t, Logprob: -float32(i + 1),
				TopLogprobs: []engine.TokenLogprob{{Token: t, Logprob: -float32(i + 1)}}}
			n++
		}
		ch <- engine.Event{Done: true, FinishReason: engine.FinishStop, PromptTokens: len(r.Prompt), Generated: n}
	}()
	return ch, nil
}
func (e *scriptEngine) Embed(context.Context, []int32) ([]float32, error) { return nil, nil }
func (e *scriptEngine) Stats() engine.Stats                               { return engine.Stats{} }

// byteTokens are the tiny model's byte tokens (<0x00> is id 3) for s.
func byteTokens(s string) []int32 {
	var out []int32
	for _, b := range []byte(s) {
		out = append(out, int32(b)+3)
	}
	return out
}

// TestLogprobsTrimAfterInvalidByte: a stop string ends the text, and only
// the tokens whose text was returned keep their logprobs, even when an
// invalid byte before it became a 3-byte U+FFFD (token bytes and text
// lengths then differ).
func TestLogprobsTrimAfterInvalidByte(t *testing.T) {
	f := newFixture(t, DefaultConfig(), &scriptEngine{toks: byteTokens("\xffaXbc")})
	_, body := f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":10,"stop":"X","logprobs":1}`, f.id))
	var r struct {
		Choices []struct {
			Text     string
			Logprobs struct{ Tokens []string }
		}
	}
	if err := json.Unmarshal(body, &r); err != nil || len(r.Choices) != 1 {
		t.Fatalf("%v %s", err, body)
	}
	if c := r.Choices[0]; c.Text != "\uFFFDa" || len(c.Logprobs.Tokens) != 2 {
		t.Errorf("text %q with logprobs for %q, want 2 tokens", c.Text, c.Logprobs.Tokens)
	}
	// Streamed: no chunk carries the stop token's logprob.
	resp, err := f.http.Client().Post(f.http.URL+"/v1/completions", "application/json",
		strings.NewReader(fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":10,"stop":"X","logprobs":1,"stream":true}`, f.id)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tokens []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct{ Logprobs *struct{ Tokens []string } }
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		for _, ch := range c.Choices {
			if ch.Logprobs != nil {
				tokens = append(tokens, ch.Logprobs.Tokens...)
			}
		}
	}
	if len(tokens) != 2 {
		t.Errorf("streamed logprobs for %q, want 2 tokens", tokens)
	}
}

// Byte tokens that are not valid UTF-8 keep distinct keys in the legacy
// top_logprobs: as raw bytes each one became the same U+FFFD key in JSON
// and a client kept one alternative of several.
func TestCompletionLogprobsByteTokens(t *testing.T) {
	bytesOf := func(id int32) []byte { return []byte{byte(id)} }
	lps := []tokenLogprob{{token: 0xff, logprob: -1, top: []engine.TokenLogprob{
		{Token: 0xff, Logprob: -1}, {Token: 0xfe, Logprob: -2}, {Token: 'a', Logprob: -3}}}}
	b, err := json.Marshal(completionLogprobsOf(bytesOf, lps, &textOffsets{}, true))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Tokens      []string
		TopLogprobs []map[string]float32 `json:"top_logprobs"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]float32{`bytes:\xff`: -1, `bytes:\xfe`: -2, "a": -3}
	if len(got.Tokens) != 1 || got.Tokens[0] != `bytes:\xff` || len(got.TopLogprobs) != 1 || !maps.Equal(got.TopLogprobs[0], want) {
		t.Errorf("tokens %q top %v, want [bytes:\\xff] %v (%s)", got.Tokens, got.TopLogprobs, want, b)
	}
}

// TestGenerationTokensMatchUsage: generation_tokens_total is what requests
// returned. A stop string ends a request a few tokens after the engine
// sampled them; the counter used to take the engine's count and exceed the
// usage clients were billed.
func TestGenerationTokensMatchUsage(t *testing.T) {
	f := newFixture(t, DefaultConfig(), &scriptEngine{toks: byteTokens("abXcdefgh")})
	total := 0
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":9,"stop":"X","stream":%v,"stream_options":{"include_usage":true}}`, f.id, stream)
		if !stream {
			body = fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":9,"stop":"X"}`, f.id)
		}
		_, b := f.do(t, "POST", "/v1/completions", body)
		i := strings.LastIndex(string(b), `"completion_tokens":`)
		if i < 0 {
			t.Fatalf("no usage in %s", b)
		}
		var n int
		fmt.Sscanf(string(b[i+len(`"completion_tokens":`):]), "%d", &n)
		if n == 0 {
			t.Fatalf("usage of 0 tokens: %s", b)
		}
		total += n
	}
	got, err := testutil.GatherAndCount(f.srv.Registry(), "conclave:generation_tokens_total")
	if err != nil || got != 1 {
		t.Fatalf("generation_tokens_total series: %d, %v", got, err)
	}
	value := func() float64 {
		mfs, _ := f.srv.Registry().Gather()
		for _, mf := range mfs {
			if mf.GetName() == "conclave:generation_tokens_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	// A request is counted once its handler returns, which may be after
	// the client has read the response.
	waitFor(t, "both requests counted", func() bool { return value() >= float64(total) })
	if v := value(); v != float64(total) {
		t.Errorf("generation_tokens_total %v, want the usage's %d", v, total)
	}
}

// A stream whose text ends inside a character (max_tokens cutting an emoji
// in half) sends the held bytes in its last text chunk as a U+FFFD each:
// their tokens' text_offset counts them so there too, as the response does.
func TestTextOffsetStreamEndsMidCharacter(t *testing.T) {
	f := newFixture(t, DefaultConfig(), &scriptEngine{toks: byteTokens("a\xf0\x9f\x98")})
	offsets := func(stream bool) (string, []int) {
		t.Helper()
		_, body := f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":10,"logprobs":0,"stream":%v}`, f.id, stream))
		type choice struct {
			Text     string
			Logprobs *struct {
				TextOffset []int `json:"text_offset"`
			}
		}
		var text string
		var offs []int
		add := func(c choice) {
			text += c.Text
			if c.Logprobs != nil {
				offs = append(offs, c.Logprobs.TextOffset...)
			}
		}
		if !stream {
			var r struct{ Choices []choice }
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			add(r.Choices[0])
			return text, offs
		}
		for _, l := range strings.Split(string(body), "\n") {
			d, ok := strings.CutPrefix(l, "data: ")
			if !ok || d == "[DONE]" {
				continue
			}
			var r struct{ Choices []choice }
			if err := json.Unmarshal([]byte(d), &r); err != nil {
				t.Fatal(err)
			}
			if len(r.Choices) > 0 {
				add(r.Choices[0])
			}
		}
		return text, offs
	}
	wantText, want := "a\uFFFD\uFFFD\uFFFD", []int{0, 1, 2, 3}
	for _, stream := range []bool{false, true} {
		if text, offs := offsets(stream); text != wantText || !slices.Equal(offs, want) {
			t.Errorf("stream %v: text %q offsets %v, want %q %v", stream, text, offs, wantText, want)
		}
	}
}
