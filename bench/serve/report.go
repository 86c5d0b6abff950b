package serve

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Schema names the JSON layout of Report; it changes when a field's meaning
// does.
const Schema = "conclave.bench.serve/v1"

// Report is a whole sweep: what was run against what, and one Level each.
type Report struct {
	Schema  string    `json:"schema"`
	Started time.Time `json:"started"`
	Target  Target    `json:"target"`
	Config  Config    `json:"config"`
	Levels  []Level   `json:"levels"`
	// Comparison is set by the caller when the run is compared with an
	// earlier report.
	Comparison *Comparison `json:"comparison,omitempty"`
}

// Target is the server measured.
type Target struct {
	URL      string   `json:"url"`
	Endpoint Endpoint `json:"endpoint"`
	Model    string   `json:"model"`
}

// Level is one point of the sweep and its measurements. Throughputs count
// successful requests over the level's wall time (first send to last
// response); latency summaries are in milliseconds over successful requests.
type Level struct {
	Mode        Mode    `json:"mode"`
	Concurrency int     `json:"concurrency,omitempty"` // workers (sessions: sessions)
	Rate        float64 `json:"rate,omitempty"`        // requests/s offered
	Sessions    int     `json:"sessions,omitempty"`
	Turns       int     `json:"turns,omitempty"`

	Requests     int            `json:"requests"`  // sent (sessions: also turns not sent, session_aborted)
	Completed    int            `json:"completed"` // succeeded
	Errors       int            `json:"errors"`
	ErrorRate    float64        `json:"error_rate"` // Errors / Requests
	ErrorsByKind map[string]int `json:"errors_by_kind,omitempty"`

	DurationS         float64 `json:"duration_s"`
	RequestThroughput float64 `json:"request_throughput"`  // requests/s
	OutputTokensPerS  float64 `json:"output_tokens_per_s"` // all streams together
	InputTokensPerS   float64 `json:"input_tokens_per_s"`
	PromptTokens      int     `json:"prompt_tokens"` // total over successful requests
	OutputTokens      int     `json:"output_tokens"`
	// PromptReported is how many successful requests had usage.prompt_tokens
	// (the rest count words).
	PromptReported int `json:"prompt_reported"`
	// OutputReported is how many had usage.completion_tokens (the rest
	// count output chunks as tokens).
	OutputReported int `json:"output_reported"`
	// Resent is how many times the transport resent a request on a fresh
	// connection (see Result.Resent).
	Resent int `json:"resent,omitempty"`
	// Interrupted is how many requests the run's interruption cut short;
	// they are in no other count (the level ended early).
	Interrupted int `json:"interrupted,omitempty"`

	TTFT Summary `json:"ttft_ms"`
	TPOT Summary `json:"tpot_ms"`
	ITL  Summary `json:"itl_ms"`
	E2E  Summary `json:"e2e_ms"`

	// PerTurn splits sessions by turn index.
	PerTurn []TurnStats `json:"per_turn,omitempty"`

	Results []Result `json:"results"`
}

// TurnStats is one turn index across all sessions of a level.
type TurnStats struct {
	Turn             int     `json:"turn"`
	Requests         int     `json:"requests"`
	Errors           int     `json:"errors"`
	PromptTokensMean float64 `json:"prompt_tokens_mean"`
	TTFT             Summary `json:"ttft_ms"`
	// TTFTRatio is this turn's TTFT p50 over turn 1's: how much the cached
	// history saves (the serving goal for turn 2 is ≤ 0.25 with a
	// 1,500-token history). 0 when either is missing.
	TTFTRatio float64 `json:"ttft_p50_ratio_to_turn1"`
}

// Name is the level's label in tables and comparisons: "c=4", "rate=2",
// "sessions=4x2".
func (l *Level) Name() string {
	switch l.Mode {
	case ModeRate:
		return fmt.Sprintf("rate=%g", l.Rate)
	case ModeSessions:
		return fmt.Sprintf("sessions=%dx%d", l.Sessions, l.Turns)
	}
	return fmt.Sprintf("c=%d", l.Concurrency)
}

// X is the level's position on a chart's x axis.
func (l *Level) X() float64 {
	if l.Mode == ModeRate {
		return l.Rate
	}
	return float64(l.Concurrency)
}

// summarize measures a level from its results and wall time. Pure.
func summarize(spec Level, rs []Result, elapsed time.Duration) Level {
	l := spec
	sortResults(rs)
	l.Results = rs
	l.Requests = len(rs)
	l.DurationS = elapsed.Seconds()
	var ttft, tpot, itl, e2e []float64
	for _, r := range rs {
		l.Resent += r.Resent
		if !r.OK() {
			l.Errors++
			if l.ErrorsByKind == nil {
				l.ErrorsByKind = map[string]int{}
			}
			l.ErrorsByKind[r.Error]++
			continue
		}
		l.Completed++
		l.PromptTokens += r.PromptTokens
		l.OutputTokens += r.OutputTokens
		if r.PromptReported {
			l.PromptReported++
		}
		if r.OutputReported {
			l.OutputReported++
		}
		ttft = append(ttft, r.TTFTMs)
		e2e = append(e2e, r.E2EMs)
		if r.OutputTokens > 1 {
			tpot = append(tpot, r.TPOTMs)
		}
		itl = append(itl, r.ITLMs...)
	}
	if l.Requests > 0 {
		l.ErrorRate = float64(l.Errors) / float64(l.Requests)
	}
	if s := l.DurationS; s > 0 {
		l.RequestThroughput = float64(l.Completed) / s
		l.OutputTokensPerS = float64(l.OutputTokens) / s
		l.InputTokensPerS = float64(l.PromptTokens) / s
	}
	l.TTFT, l.TPOT, l.ITL, l.E2E = Summarize(ttft), Summarize(tpot), Summarize(itl), Summarize(e2e)
	if l.Mode == ModeSessions {
		l.PerTurn = perTurn(rs, l.Turns)
	}
	return l
}

func perTurn(rs []Result, turns int) []TurnStats {
	out := make([]TurnStats, turns)
	ttft := make([][]float64, turns)
	prompt := make([]int, turns)
	for i := range out {
		out[i].Turn = i + 1
	}
	for _, r := range rs {
		if r.Turn < 1 || r.Turn > turns {
			continue
		}
		t := &out[r.Turn-1]
		t.Requests++
		if !r.OK() {
			t.Errors++
			continue
		}
		ttft[r.Turn-1] = append(ttft[r.Turn-1], r.TTFTMs)
		prompt[r.Turn-1] += r.PromptTokens
	}
	for i := range out {
		out[i].TTFT = Summarize(ttft[i])
		if n := out[i].TTFT.N; n > 0 {
			out[i].PromptTokensMean = float64(prompt[i]) / float64(n)
		}
		if first := out[0].TTFT.P50; first > 0 && out[i].TTFT.N > 0 {
			out[i].TTFTRatio = out[i].TTFT.P50 / first
		}
	}
	return out
}

// WriteMarkdown writes the report as Markdown tables: one row per level,
// per-turn TTFT for sessions, and the comparison when there is one.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "## conclave bench serve: %s at %s (%s)\n\n", r.Target.Model, r.Target.URL, r.Target.Endpoint)
	fmt.Fprintf(&b, "Prompt %s words (≈ tokens), max_tokens %s, ignore_eos %v, seed %d", c.Prompt, c.Output, c.IgnoreEOS, c.Seed)
	if c.Temperature != nil {
		fmt.Fprintf(&b, ", temperature %v", *c.Temperature)
	}
	if c.TopP != nil {
		fmt.Fprintf(&b, ", top_p %v", *c.TopP)
	}
	switch {
	case c.Mode() == ModeSessions:
		fmt.Fprintf(&b, ", %d sessions × %d turns, follow-up messages %s words", c.Sessions, c.Turns, c.TurnPrompt)
	case c.Requests > 0 && c.Duration > 0:
		fmt.Fprintf(&b, ", %d requests or %v per level", c.Requests, c.Duration)
	case c.Requests > 0:
		fmt.Fprintf(&b, ", %d requests per level", c.Requests)
	default:
		fmt.Fprintf(&b, ", %v per level", c.Duration)
	}
	b.WriteString(". Latencies in ms; throughputs over each level's wall time.\n\n")
	b.WriteString("| level | req/s | out tok/s | in tok/s | TTFT p50 | TTFT p90 | TTFT p99 | TPOT p50 | TPOT p99 | ITL p50 | ITL p99 | E2E p50 | E2E p99 | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i := range r.Levels {
		l := &r.Levels[i]
		fmt.Fprintf(&b, "| %s | %.2f | %.1f | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d (%.1f%%) |\n",
			l.Name(), l.RequestThroughput, l.OutputTokensPerS, l.InputTokensPerS,
			msCell(l.TTFT, l.TTFT.P50), msCell(l.TTFT, l.TTFT.P90), msCell(l.TTFT, l.TTFT.P99),
			msCell(l.TPOT, l.TPOT.P50), msCell(l.TPOT, l.TPOT.P99),
			msCell(l.ITL, l.ITL.P50), msCell(l.ITL, l.ITL.P99),
			msCell(l.E2E, l.E2E.P50), msCell(l.E2E, l.E2E.P99),
			l.Errors, 100*l.ErrorRate)
	}
	for i := range r.Levels {
		l := &r.Levels[i]
		if len(l.ErrorsByKind) > 0 {
			var kinds []string
			for _, k := range slices.Sorted(maps.Keys(l.ErrorsByKind)) {
				kinds = append(kinds, fmt.Sprintf("%s ×%d", k, l.ErrorsByKind[k]))
			}
			fmt.Fprintf(&b, "\nErrors at %s: %s.", l.Name(), strings.Join(kinds, ", "))
			if e := firstError(l.Results); e != nil {
				parts := []string{e.Error}
				for _, p := range []string{e.ErrorType, e.ErrorMessage} {
					if p != "" {
						parts = append(parts, p)
					}
				}
				fmt.Fprintf(&b, " First: %s.", strings.Join(parts, ", "))
			}
			b.WriteString("\n")
		}
		if l.Completed > 0 && l.PromptReported < l.Completed {
			fmt.Fprintf(&b, "\nAt %s, %d of %d prompts are counted in words: the server sent no usage.prompt_tokens.\n",
				l.Name(), l.Completed-l.PromptReported, l.Completed)
		}
		if l.Completed > 0 && l.OutputReported < l.Completed {
			fmt.Fprintf(&b, "\nAt %s, %d of %d outputs are counted in SSE chunks, not tokens: the server sent no usage.completion_tokens (ask for it with stream_options.include_usage; a chunk may carry several tokens, which also makes ITL a per-chunk gap).\n",
				l.Name(), l.Completed-l.OutputReported, l.Completed)
		}
		if l.Interrupted > 0 {
			fmt.Fprintf(&b, "\n%s was interrupted: %d requests in flight were cut short and are left out.\n", l.Name(), l.Interrupted)
		}
		if l.Resent > 0 {
			fmt.Fprintf(&b, "\nAt %s, %d requests were sent again on a fresh connection after a pooled one turned out closed; each is timed from its last attempt.\n",
				l.Name(), l.Resent)
		}
		if len(l.PerTurn) > 0 {
			fmt.Fprintf(&b, "\n### TTFT per turn (%s)\n\n", l.Name())
			b.WriteString("| turn | requests | errors | prompt tokens (mean) | TTFT mean | TTFT p50 | TTFT p90 | TTFT p99 | p50 / turn 1 |\n")
			b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, t := range l.PerTurn {
				fmt.Fprintf(&b, "| %d | %d | %d | %.0f | %s | %s | %s | %s | %s |\n",
					t.Turn, t.Requests, t.Errors, t.PromptTokensMean,
					msCell(t.TTFT, t.TTFT.Mean), msCell(t.TTFT, t.TTFT.P50), msCell(t.TTFT, t.TTFT.P90), msCell(t.TTFT, t.TTFT.P99),
					ratioCell(t.TTFTRatio))
			}
			if len(l.PerTurn) > 1 && l.PerTurn[1].TTFTRatio > 0 {
				fmt.Fprintf(&b, "\nTurn-2 TTFT p50 is %.2f× turn 1's (serving goal: ≤ 0.25× with a 1,500-token history, which needs the server to reuse the session's cached prefix).\n",
					l.PerTurn[1].TTFTRatio)
			}
		}
	}
	if r.Comparison != nil {
		b.WriteString("\n")
		if err := r.Comparison.writeMarkdown(&b); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func firstError(rs []Result) *Result {
	for i := range rs {
		if !rs[i].OK() {
			return &rs[i]
		}
	}
	return nil
}

// msCell formats v of summary s, or "–" when s is empty.
func msCell(s Summary, v float64) string {
	if s.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", v)
}

func ratioCell(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}
