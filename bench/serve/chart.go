package serve

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WriteCharts draws the report as PNGs in dir (created if needed) and
// returns their paths: throughput.png (output tokens/s against the level),
// requests.png (requests/s), ttft.png (p50, p99), tpot.png (p50, p99), and for
// sessions turns.png (TTFT p50 and p99 per turn index).
func WriteCharts(r *Report, dir string) ([]string, error) {
	if len(r.Levels) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	xlabel := "concurrency (requests in flight)"
	switch r.Config.Mode() {
	case ModeRate:
		xlabel = "offered load (requests/s)"
	case ModeSessions:
		xlabel = "sessions"
	}
	series := func(get func(*Level) (float64, bool)) plotter.XYs { return levelSeries(r.Levels, get) }
	all := func(get func(*Level) float64) func(*Level) (float64, bool) {
		return func(l *Level) (float64, bool) { return get(l), true }
	}
	title := r.Target.Model
	charts := []struct {
		file, title, ylabel string
		lines               []any
	}{
		{"throughput.png", "Output throughput, " + title, "output tokens/s (all streams)", []any{
			"output tokens/s", series(all(func(l *Level) float64 { return l.OutputTokensPerS })),
		}},
		{"requests.png", "Request throughput, " + title, "requests/s", []any{
			"requests/s", series(all(func(l *Level) float64 { return l.RequestThroughput })),
		}},
		// A level without a successful request has no latency: its point is
		// left out, not drawn at 0 ms as the sweep's fastest.
		{"ttft.png", "Time to first token, " + title, "ms", []any{
			"p50", series(func(l *Level) (float64, bool) { return l.TTFT.P50, l.TTFT.N > 0 }),
			"p99", series(func(l *Level) (float64, bool) { return l.TTFT.P99, l.TTFT.N > 0 }),
		}},
		{"tpot.png", "Time per output token, " + title, "ms", []any{
			"p50", series(func(l *Level) (float64, bool) { return l.TPOT.P50, l.TPOT.N > 0 }),
			"p99", series(func(l *Level) (float64, bool) { return l.TPOT.P99, l.TPOT.N > 0 }),
		}},
	}
	var (
		paths []string
		ticks []plot.Tick
		lo    = r.Levels[0].X()
		hi    = lo
	)
	for i := range r.Levels {
		x := r.Levels[i].X()
		ticks = append(ticks, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'g', 4, 64)})
		lo, hi = min(lo, x), max(hi, x)
	}
	for _, c := range charts {
		p := newPlot(c.title, xlabel, c.ylabel)
		if err := plotutil.AddLinePoints(p, c.lines...); err != nil {
			return paths, fmt.Errorf("%s: %w", c.file, err)
		}
		// Sweeps usually double (1, 2, 4, … 64): a log axis spaces them
		// evenly. Ticks sit on the levels measured.
		if lo > 0 && hi/lo >= 8 {
			p.X.Scale = plot.LogScale{}
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		headroom(p)
		path := filepath.Join(dir, c.file)
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	for i := range r.Levels {
		l := &r.Levels[i]
		if len(l.PerTurn) == 0 {
			continue
		}
		var p50, p99 plotter.XYs
		for _, t := range l.PerTurn {
			if t.TTFT.N == 0 {
				continue // no turn answered: no latency to draw
			}
			p50 = append(p50, plotter.XY{X: float64(t.Turn), Y: t.TTFT.P50})
			p99 = append(p99, plotter.XY{X: float64(t.Turn), Y: t.TTFT.P99})
		}
		p := newPlot(fmt.Sprintf("TTFT per turn, %s, %s", l.Name(), title), "turn", "ms")
		if err := plotutil.AddLinePoints(p, "p50", p50, "p99", p99); err != nil {
			return paths, err
		}
		var turns []plot.Tick
		for _, t := range l.PerTurn {
			turns = append(turns, plot.Tick{Value: float64(t.Turn), Label: strconv.Itoa(t.Turn)})
		}
		p.X.Tick.Marker = plot.ConstantTicks(turns)
		headroom(p)
		name := "turns.png"
		if i > 0 {
			name = fmt.Sprintf("turns-%d.png", i)
		}
		path := filepath.Join(dir, name)
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// levelSeries is one line of a sweep chart: each level's x and get's value,
// leaving out the levels get has no value for.
func levelSeries(levels []Level, get func(*Level) (float64, bool)) plotter.XYs {
	xys := make(plotter.XYs, 0, len(levels))
	for i := range levels {
		if y, ok := get(&levels[i]); ok {
			xys = append(xys, plotter.XY{X: levels[i].X(), Y: y})
		}
	}
	return xys
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

// headroom raises the y axis 15% above the data so the legend, at the top,
// does not cover it.
func headroom(p *plot.Plot) {
	if p.Y.Max > 0 {
		p.Y.Max *= 1.15
	}
}
