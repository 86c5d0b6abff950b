package serve

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
)

// Better says which direction of a metric is an improvement.
type Better string

// Directions.
const (
	Higher Better = "higher"
	Lower  Better = "lower"
)

// metric is one comparable number of a level.
type metric struct {
	name   string
	better Better
	get    func(l *Level) float64
	// n is the number of samples behind a latency (nil for rates): with
	// none on either side the metric is not compared (a Summary of no
	// samples is all zeros, which would read as a vast improvement).
	n func(l *Level) int
}

// metrics are compared in this order.
var metrics = []metric{
	{"request_throughput", Higher, func(l *Level) float64 { return l.RequestThroughput }, nil},
	{"output_tokens_per_s", Higher, func(l *Level) float64 { return l.OutputTokensPerS }, nil},
	{"input_tokens_per_s", Higher, func(l *Level) float64 { return l.InputTokensPerS }, nil},
	{"ttft_p50_ms", Lower, func(l *Level) float64 { return l.TTFT.P50 }, ttftN},
	{"ttft_p90_ms", Lower, func(l *Level) float64 { return l.TTFT.P90 }, ttftN},
	{"ttft_p99_ms", Lower, func(l *Level) float64 { return l.TTFT.P99 }, ttftN},
	{"tpot_p50_ms", Lower, func(l *Level) float64 { return l.TPOT.P50 }, tpotN},
	{"tpot_p99_ms", Lower, func(l *Level) float64 { return l.TPOT.P99 }, tpotN},
	{"itl_p50_ms", Lower, func(l *Level) float64 { return l.ITL.P50 }, itlN},
	{"itl_p99_ms", Lower, func(l *Level) float64 { return l.ITL.P99 }, itlN},
	{"e2e_p50_ms", Lower, func(l *Level) float64 { return l.E2E.P50 }, e2eN},
	{"e2e_p99_ms", Lower, func(l *Level) float64 { return l.E2E.P99 }, e2eN},
	{"error_rate", Lower, func(l *Level) float64 { return l.ErrorRate }, nil},
}

func ttftN(l *Level) int { return l.TTFT.N }
func tpotN(l *Level) int { return l.TPOT.N }
func itlN(l *Level) int  { return l.ITL.N }
func e2eN(l *Level) int  { return l.E2E.N }

// Ratio is one metric of one level in two runs.
type Ratio struct {
	Metric string  `json:"metric"`
	Better Better  `json:"better"`
	Old    float64 `json:"old"`
	New    float64 `json:"new"`
	// Ratio is New/Old; absent when Old is 0 (and New is not), or NoData.
	Ratio *float64 `json:"ratio,omitempty"`
	// NoData: a latency one of the runs has no sample of at this level
	// (no successful request); Old or New is then meaningless.
	NoData bool `json:"no_data,omitempty"`
}

// LevelComparison is the ratios of one level present in both runs.
type LevelComparison struct {
	Level  string  `json:"level"`
	Ratios []Ratio `json:"ratios"`
}

// Comparison sets a run beside an earlier one, level by level (matched by
// Level.Name) and metric by metric.
type Comparison struct {
	Levels []LevelComparison `json:"levels"`
	// Missing names levels present in only one of the runs.
	Missing []string `json:"missing,omitempty"`
	// Differences names the workload settings that differ between the
	// runs (levels are matched by name alone, so their ratios then compare
	// different work).
	Differences []string `json:"differences,omitempty"`
}

// workloadDifferences lists the settings of a and b that shape the work a
// level does and differ.
func workloadDifferences(a, b Config) []string {
	var out []string
	add := func(name string, x, y any) {
		xs, _ := json.Marshal(x)
		ys, _ := json.Marshal(y)
		if string(xs) != string(ys) {
			out = append(out, fmt.Sprintf("%s: %s → %s", name, xs, ys))
		}
	}
	add("endpoint", a.Endpoint, b.Endpoint)
	add("model", a.Model, b.Model)
	add("prompt", a.Prompt, b.Prompt)
	add("output", a.Output, b.Output)
	add("ignore_eos", a.IgnoreEOS, b.IgnoreEOS)
	add("temperature", a.Temperature, b.Temperature)
	add("top_p", a.TopP, b.TopP)
	add("requests", a.Requests, b.Requests)
	add("duration_ns", a.Duration, b.Duration)
	add("turns", a.Turns, b.Turns)
	add("turn_prompt", a.TurnPrompt, b.TurnPrompt)
	add("seed", a.Seed, b.Seed)
	return out
}

// Compare computes new/old for every metric of every level the two reports
// share; for sessions, also each turn's TTFT p50.
func Compare(old, new *Report) Comparison {
	c := Comparison{Differences: workloadDifferences(old.Config, new.Config)}
	oldBy := map[string]*Level{}
	for i := range old.Levels {
		oldBy[old.Levels[i].Name()] = &old.Levels[i]
	}
	seen := map[string]bool{}
	for i := range new.Levels {
		n := &new.Levels[i]
		name := n.Name()
		o, ok := oldBy[name]
		if !ok {
			c.Missing = append(c.Missing, name+": not in the old run")
			continue
		}
		seen[name] = true
		lc := LevelComparison{Level: name}
		for _, m := range metrics {
			r := ratio(m.name, m.better, m.get(o), m.get(n))
			if m.n != nil && (m.n(o) == 0 || m.n(n) == 0) {
				r.Ratio, r.NoData = nil, true
			}
			lc.Ratios = append(lc.Ratios, r)
		}
		for t := range min(len(o.PerTurn), len(n.PerTurn)) {
			ot, nt := o.PerTurn[t].TTFT, n.PerTurn[t].TTFT
			r := ratio(fmt.Sprintf("turn%d_ttft_p50_ms", t+1), Lower, ot.P50, nt.P50)
			if ot.N == 0 || nt.N == 0 {
				r.Ratio, r.NoData = nil, true
			}
			lc.Ratios = append(lc.Ratios, r)
		}
		c.Levels = append(c.Levels, lc)
	}
	for i := range old.Levels {
		if name := old.Levels[i].Name(); !seen[name] {
			c.Missing = append(c.Missing, name+": not in the new run")
		}
	}
	return c
}

// ratio is new/old; equal zeros are 1 (no change), old 0 alone is absent.
func ratio(name string, b Better, old, new float64) Ratio {
	r := Ratio{Metric: name, Better: b, Old: old, New: new}
	switch {
	case old == 0 && new == 0:
		one := 1.0
		r.Ratio = &one
	case old != 0 && !math.IsNaN(old) && !math.IsNaN(new):
		v := new / old
		r.Ratio = &v
	}
	return r
}

// Worse reports whether the metric moved in its worse direction, including
// from 0 (an error rate that appeared).
func (r Ratio) Worse() bool {
	switch {
	case r.NoData:
		return false
	case r.Ratio == nil:
		return r.Old == 0 && (r.Better == Lower) == (r.New > 0)
	case r.Better == Higher:
		return *r.Ratio < 1
	}
	return *r.Ratio > 1
}

// Improved reports whether the metric moved in its better direction.
func (r Ratio) Improved() bool {
	if r.Ratio == nil {
		return false
	}
	if r.Better == Higher {
		return *r.Ratio > 1
	}
	return *r.Ratio < 1
}

// WriteMarkdown writes a metric × level table of new/old ratios.
func (c *Comparison) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	if err := c.writeMarkdown(&b); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (c *Comparison) writeMarkdown(b *strings.Builder) error {
	b.WriteString("### new / old\n\n")
	if len(c.Differences) > 0 {
		b.WriteString("The runs' workloads differ, so the ratios compare different work: " + strings.Join(c.Differences, "; ") + ".\n\n")
	}
	if len(c.Levels) == 0 {
		b.WriteString("No level is in both runs.\n")
	} else {
		b.WriteString("| metric |")
		for _, l := range c.Levels {
			fmt.Fprintf(b, " %s |", l.Level)
		}
		b.WriteString("\n|---|")
		for range c.Levels {
			b.WriteString("---:|")
		}
		b.WriteString("\n")
		// Rows follow the first level's metrics; session levels add turns.
		var rows []Ratio
		for _, l := range c.Levels {
			if len(l.Ratios) > len(rows) {
				rows = l.Ratios
			}
		}
		for i, row := range rows {
			fmt.Fprintf(b, "| %s (%s is better) |", row.Metric, row.Better)
			for _, l := range c.Levels {
				cell := "–"
				switch r := ratioAt(l.Ratios, i); {
				case r == nil:
				case r.NoData:
					cell = "no data"
				case r.Ratio != nil:
					cell = fmt.Sprintf("%.3f", *r.Ratio)
				case r.Old == 0 && r.New != 0:
					cell = fmt.Sprintf("0 → %.3g", r.New)
				}
				if r := ratioAt(l.Ratios, i); r != nil && r.Improved() {
					cell += " ✓"
				} else if r != nil && r.Worse() {
					cell += " ✗"
				}
				fmt.Fprintf(b, " %s |", cell)
			}
			b.WriteString("\n")
		}
		b.WriteString("\n✓: moved in the better direction, ✗: in the worse one; no data: a run with no successful request at that level.\n")
	}
	for _, m := range c.Missing {
		fmt.Fprintf(b, "\n- %s", m)
	}
	if len(c.Missing) > 0 {
		b.WriteString("\n")
	}
	return nil
}

func ratioAt(rs []Ratio, i int) *Ratio {
	if i < len(rs) {
		return &rs[i]
	}
	return nil
}
