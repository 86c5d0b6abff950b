package serve

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMeasure(t *testing.T) {
	t0 := time.Unix(100, 0)
	at := func(ms ...int) []time.Time {
		ts := make([]time.Time, len(ms))
		for i, m := range ms {
			ts[i] = t0.Add(time.Duration(m) * time.Millisecond)
		}
		return ts
	}
	for _, tc := range []struct {
		name     string
		s        streamResult
		endMs    int
		want     Result
		wantITLs []float64
	}{
		{
			name: "usage", s: streamResult{Times: at(100, 110, 130), Usage: &Usage{PromptTokens: 20, CompletionTokens: 3}, Finish: "length"}, endMs: 140,
			want:     Result{PromptWords: 16, PromptTokens: 20, PromptReported: true, OutputTokens: 3, Chunks: 3, TTFTMs: 100, E2EMs: 140, TPOTMs: 20, Finish: "length"},
			wantITLs: []float64{10, 20},
		},
		{
			name: "chunks when no usage", s: streamResult{Times: at(50, 60, 70, 80, 90)}, endMs: 90,
			want:     Result{PromptWords: 16, PromptTokens: 16, OutputTokens: 5, Chunks: 5, TTFTMs: 50, E2EMs: 90, TPOTMs: 10},
			wantITLs: []float64{10, 10, 10, 10},
		},
		{
			name: "usage counts tokens the chunks merged", s: streamResult{Times: at(10, 20), Usage: &Usage{CompletionTokens: 5}}, endMs: 50,
			want:     Result{PromptWords: 16, PromptTokens: 16, OutputTokens: 5, Chunks: 2, TTFTMs: 10, E2EMs: 50, TPOTMs: 10},
			wantITLs: []float64{10},
		},
		{
			name: "one token has no TPOT", s: streamResult{Times: at(30)}, endMs: 31,
			want:     Result{PromptWords: 16, PromptTokens: 16, OutputTokens: 1, Chunks: 1, TTFTMs: 30, E2EMs: 31},
			wantITLs: []float64{},
		},
		{
			name: "no output", s: streamResult{}, endMs: 5,
			want: Result{PromptWords: 16, PromptTokens: 16, E2EMs: 5},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Result{PromptWords: 16}
			measure(&r, tc.s, t0, t0.Add(time.Duration(tc.endMs)*time.Millisecond))
			itls := r.ITLMs
			r.ITLMs = nil
			if !slices.Equal(itls, tc.wantITLs) {
				t.Errorf("ITLs %v, want %v", itls, tc.wantITLs)
			}
			if r.TTFTMs != tc.want.TTFTMs || r.E2EMs != tc.want.E2EMs || math.Abs(r.TPOTMs-tc.want.TPOTMs) > 1e-9 ||
				r.PromptTokens != tc.want.PromptTokens || r.PromptReported != tc.want.PromptReported ||
				r.OutputTokens != tc.want.OutputTokens || r.Chunks != tc.want.Chunks || r.Finish != tc.want.Finish {
				t.Errorf("got %+v\nwant %+v", r, tc.want)
			}
		})
	}
}

func TestSummarizeLevel(t *testing.T) {
	ok := func(i, turn int, ttft, e2e float64, out int, itl ...float64) Result {
		r := Result{Index: i, Turn: turn, PromptTokens: 100, PromptReported: turn != 2, OutputTokens: out,
			TTFTMs: ttft, E2EMs: e2e, ITLMs: itl}
		if out > 1 {
			r.TPOTMs = (e2e - ttft) / float64(out-1)
		}
		return r
	}
	rs := []Result{
		ok(3, 2, 10, 30, 3, 10, 10),
		{Index: 1, Turn: 1, Error: "http_503", Status: 503},
		ok(0, 1, 40, 60, 3, 5, 15),
		ok(2, 1, 60, 60, 1),
	}
	l := summarize(Level{Mode: ModeSessions, Sessions: 2, Turns: 2, Concurrency: 2}, rs, 2*time.Second)
	if l.Requests != 4 || l.Completed != 3 || l.Errors != 1 || l.ErrorRate != 0.25 || l.ErrorsByKind["http_503"] != 1 {
		t.Errorf("counts: %+v", l)
	}
	if l.PromptTokens != 300 || l.OutputTokens != 7 || l.PromptReported != 2 {
		t.Errorf("tokens: prompt %d output %d reported %d", l.PromptTokens, l.OutputTokens, l.PromptReported)
	}
	if l.RequestThroughput != 1.5 || l.OutputTokensPerS != 3.5 || l.InputTokensPerS != 150 || l.DurationS != 2 {
		t.Errorf("throughput: %v req/s, %v out/s, %v in/s over %vs", l.RequestThroughput, l.OutputTokensPerS, l.InputTokensPerS, l.DurationS)
	}
	if l.TTFT.N != 3 || l.TTFT.P50 != 40 || l.TPOT.N != 2 || l.TPOT.Mean != 10 || l.ITL.N != 4 || l.ITL.Mean != 10 || l.E2E.Max != 60 {
		t.Errorf("latencies: ttft %+v tpot %+v itl %+v e2e %+v", l.TTFT, l.TPOT, l.ITL, l.E2E)
	}
	for i, r := range l.Results {
		if r.Index != i {
			t.Fatalf("results not sorted: %d at %d", r.Index, i)
		}
	}
	want := []TurnStats{
		{Turn: 1, Requests: 3, Errors: 1, PromptTokensMean: 100, TTFTRatio: 1},
		{Turn: 2, Requests: 1, PromptTokensMean: 100, TTFTRatio: 0.2},
	}
	for i, w := range want {
		g := l.PerTurn[i]
		g.TTFT = Summary{}
		if g != w {
			t.Errorf("turn %d: %+v, want %+v", i+1, g, w)
		}
	}
	if l.PerTurn[0].TTFT.P50 != 50 || l.PerTurn[1].TTFT.P50 != 10 {
		t.Errorf("turn TTFTs %+v %+v", l.PerTurn[0].TTFT, l.PerTurn[1].TTFT)
	}

	empty := summarize(Level{Mode: ModeConcurrency, Concurrency: 1}, nil, 0)
	if empty.Requests != 0 || empty.ErrorRate != 0 || empty.RequestThroughput != 0 || empty.PerTurn != nil {
		t.Errorf("empty level: %+v", empty)
	}
}

func level(name string, c int, reqps, ttft50 float64, errRate float64) Level {
	return Level{Mode: ModeConcurrency, Concurrency: c, RequestThroughput: reqps, TTFT: Summary{N: 1, P50: ttft50}, ErrorRate: errRate}
}

func TestCompare(t *testing.T) {
	old := &Report{Levels: []Level{level("", 1, 2, 100, 0), level("", 4, 6, 200, 0.5), level("", 8, 1, 1, 0)}}
	new := &Report{Levels: []Level{level("", 1, 3, 50, 0), level("", 4, 3, 400, 0), level("", 16, 1, 1, 0)}}
	c := Compare(old, new)
	if len(c.Levels) != 2 || c.Levels[0].Level != "c=1" || c.Levels[1].Level != "c=4" {
		t.Fatalf("levels %+v", c.Levels)
	}
	if !slices.Equal(c.Missing, []string{"c=16: not in the old run", "c=8: not in the new run"}) {
		t.Errorf("missing %q", c.Missing)
	}
	get := func(l int, metric string) Ratio {
		for _, r := range c.Levels[l].Ratios {
			if r.Metric == metric {
				return r
			}
		}
		t.Fatalf("no %s", metric)
		return Ratio{}
	}
	for _, tc := range []struct {
		level    int
		metric   string
		ratio    float64 // -1: absent
		improved bool
	}{
		{0, "request_throughput", 1.5, true},
		{0, "ttft_p50_ms", 0.5, true},
		{0, "error_rate", 1, false},
		{1, "request_throughput", 0.5, false},
		{1, "ttft_p50_ms", 2, false},
		{1, "error_rate", 0, true},
	} {
		t.Run(tc.metric, func(t *testing.T) {
			r := get(tc.level, tc.metric)
			if r.Ratio == nil || *r.Ratio != tc.ratio || r.Improved() != tc.improved {
				t.Errorf("%+v (ratio %v), want ratio %v improved %v", r, deref(r.Ratio), tc.ratio, tc.improved)
			}
		})
	}
	if r := ratio("x", Lower, 0, 5); r.Ratio != nil || r.Improved() || !r.Worse() {
		t.Errorf("0 → 5 has no ratio and is worse: %+v", r)
	}
	// No TPOT sample on either side: not compared (a Summary of nothing is
	// zeros).
	if r := get(0, "tpot_p50_ms"); !r.NoData || r.Ratio != nil || r.Improved() || r.Worse() {
		t.Errorf("tpot without samples: %+v", r)
	}
	var md bytes.Buffer
	if err := c.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| metric | c=1 | c=4 |", "| request_throughput (higher is better) | 1.500 ✓ | 0.500 ✗ |", "| ttft_p50_ms (lower is better) | 0.500 ✓ | 2.000 ✗ |", "- c=8: not in the new run"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}

// TestCompareFailedLevel: a level where every request of the new run
// failed is not an improvement in latency, and an error rate from 0 shows.
func TestCompareFailedLevel(t *testing.T) {
	ok := Result{TTFTMs: 50, E2EMs: 700, TPOTMs: 10, OutputTokens: 64, ITLMs: []float64{10, 10}}
	bad := Result{Error: "http_503"}
	spec := Level{Mode: ModeConcurrency, Concurrency: 16}
	old := &Report{Levels: []Level{summarize(spec, []Result{ok, ok}, time.Second)}}
	nw := &Report{Levels: []Level{summarize(spec, []Result{bad, bad}, time.Second)}}
	c := Compare(old, nw)
	for _, r := range c.Levels[0].Ratios {
		switch {
		case r.Metric == "error_rate":
			if r.Ratio != nil || !r.Worse() {
				t.Errorf("error rate 0 → 1: %+v, want no ratio, worse", r)
			}
		case strings.HasSuffix(r.Metric, "_ms"):
			if !r.NoData || r.Improved() {
				t.Errorf("%s with no successful request: %+v, want no data", r.Metric, r)
			}
		}
	}
	var md bytes.Buffer
	if err := c.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| ttft_p50_ms (lower is better) | no data |", "| error_rate (lower is better) | 0 → 1 ✗ |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}

// TestCompareDifferentWorkloads: runs whose workloads differ are still
// compared level by level, with the differences said first.
func TestCompareDifferentWorkloads(t *testing.T) {
	a, b := DefaultConfig(), DefaultConfig()
	b.Output, b.IgnoreEOS = Fixed(128), true
	old := &Report{Config: a, Levels: []Level{level("", 1, 2, 100, 0)}}
	nw := &Report{Config: b, Levels: []Level{level("", 1, 2, 100, 0)}}
	c := Compare(old, nw)
	if len(c.Differences) != 2 {
		t.Fatalf("differences %q, want output and ignore_eos", c.Differences)
	}
	var md bytes.Buffer
	if err := c.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "workloads differ") || !strings.Contains(md.String(), "ignore_eos: false → true") {
		t.Errorf("markdown does not say the workloads differ:\n%s", md.String())
	}
	if c := Compare(old, old); len(c.Differences) != 0 {
		t.Errorf("a run against itself differs: %q", c.Differences)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestWriteMarkdown(t *testing.T) {
	c := DefaultConfig()
	c.Prompt = Dist{Kind: DistUniform, A: 64, B: 512}
	r := &Report{Schema: Schema, Config: c, Target: Target{URL: "http://x", Endpoint: Chat, Model: "m"},
		Levels: []Level{
			{Mode: ModeConcurrency, Concurrency: 4, Requests: 2, Completed: 2, RequestThroughput: 1.5, OutputTokensPerS: 96,
				InputTokensPerS: 640, TTFT: Summary{N: 2, P50: 12.34, P90: 20, P99: 21}, PromptReported: 2},
			{Mode: ModeConcurrency, Concurrency: 8, Requests: 2, Errors: 2, ErrorRate: 1, ErrorsByKind: map[string]int{"timeout": 2},
				Results: []Result{{Error: "timeout", ErrorMessage: "deadline"}}},
		}}
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"## conclave bench serve: m at http://x (chat)",
		"Prompt uniform:64-512 words",
		"| c=4 | 1.50 | 96.0 | 640.0 | 12.3 | 20.0 | 21.0 | – |",
		"| c=8 | 0.00 | 0.0 | 0.0 | – |",
		"| 2 (100.0%) |",
		"Errors at c=8: timeout ×2. First: timeout, deadline.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
