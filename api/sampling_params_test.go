package api

import (
	"encoding/json"
	"testing"
)

// TestRepetitionPenaltySpellings: vLLM's repetition_penalty covers the
// whole prompt and output (it was given llama.cpp's 64-token window);
// llama.cpp's repeat_penalty and repeat_last_n (silently dropped) now keep
// their meaning; both at once, or values out of range, are refused.
func TestRepetitionPenaltySpellings(t *testing.T) {
	f := newFixture(t, DefaultConfig(), noEngine{})
	body := func(extra map[string]any) []byte {
		m := map[string]any{"model": f.id, "prompt": "hello"}
		for k, v := range extra {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	for _, tc := range []struct {
		name    string
		extra   map[string]any
		penalty float32
		lastN   int
	}{
		{"vLLM", map[string]any{"repetition_penalty": 1.3}, 1.3, -1},
		{"llama.cpp default window", map[string]any{"repeat_penalty": 1.3}, 1.3, 0},
		{"llama.cpp window", map[string]any{"repeat_penalty": 1.3, "repeat_last_n": 128}, 1.3, 128},
		{"llama.cpp whole context", map[string]any{"repeat_penalty": 1.3, "repeat_last_n": -1}, 1.3, -1},
		{"llama.cpp window 0 disables", map[string]any{"repeat_penalty": 1.3, "repeat_last_n": 0}, 0, 0},
	} {
		j, e := f.srv.completionJob(body(tc.extra))
		if e != nil {
			t.Errorf("%s: %v", tc.name, e)
			continue
		}
		if j.sampling.RepeatPenalty != tc.penalty || j.sampling.RepeatLastN != tc.lastN {
			t.Errorf("%s: RepeatPenalty %v RepeatLastN %d, want %v %d", tc.name, j.sampling.RepeatPenalty, j.sampling.RepeatLastN, tc.penalty, tc.lastN)
		}
	}
	for _, extra := range []map[string]any{
		{"repetition_penalty": 1.1, "repeat_penalty": 1.1},
		{"repeat_penalty": 1e-39},
		{"repetition_penalty": 1e-39},
		{"repeat_last_n": -2, "repeat_penalty": 1.1},
		{"repeat_last_n": 8, "repetition_penalty": 1.3}, // it was ignored
	} {
		if _, e := f.srv.completionJob(body(extra)); e == nil || e.Status != 400 {
			t.Errorf("%v: %+v, want a 400", extra, e)
		}
	}
}

// TestJSONLogprob: a logprob JSON cannot carry (a NaN, −Inf) is written
// as −9999, as vLLM does, instead of failing the whole response with a 500.
func TestJSONLogprob(t *testing.T) {
	nan, inf := float32(0), float32(1)
	nan, inf = nan/nan, -inf/float32(0)
	for in, want := range map[float32]float32{-0.5: -0.5, 0: 0, inf: -9999, -1e30: -9999} {
		if got := jsonLogprob(in); got != want {
			t.Errorf("jsonLogprob(%v) = %v, want %v", in, got, want)
		}
	}
	if got := jsonLogprob(nan); got != -9999 {
		t.Errorf("jsonLogprob(NaN) = %v", got)
	}
}

// TestPenaltiesSkipPrompt: presence and frequency penalties count the
// tokens generated so far (OpenAI), not the prompt: the first token of a
// greedy completion does not depend on them. They counted the prompt.
func TestPenaltiesSkipPrompt(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	prompt := []int{105, 105, 105, 105, 105, 105, 105, 105, 99, 99, 99, 99, 99, 99, 99, 99, 10, 11, 12, 13, 14, 15, 16, 17}
	first := func(extra map[string]any) string {
		m := map[string]any{"model": f.id, "prompt": prompt, "max_tokens": 1, "temperature": 0}
		for k, v := range extra {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		resp, body := f.do(t, "POST", "/v1/completions", string(b))
		var r struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != 200 || len(r.Choices) != 1 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		return r.Choices[0].Text
	}
	want := first(nil)
	for _, extra := range []map[string]any{
		{"frequency_penalty": -2},
		{"presence_penalty": -2},
		{"presence_penalty": 2, "frequency_penalty": 2},
	} {
		if got := first(extra); got != want {
			t.Errorf("%v: first token %q, want %q (nothing generated yet)", extra, got, want)
		}
	}
}
