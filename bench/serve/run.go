package serve

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Observer hears about a run's progress, e.g. to draw a progress bar. Both
// methods are called from Run's goroutine, one call at a time, and must not
// block for long: requests finishing meanwhile wait.
type Observer interface {
	// LevelStarted is called before a level's first request; planned is the
	// number of requests it will send, or 0 when only a duration bounds it.
	LevelStarted(l Level, planned int)
	// RequestDone is called once for each finished request of the level.
	RequestDone(r Result)
}

// Options are the parts of a run that are not configuration.
type Options struct {
	// Client sends the requests; nil means one with a connection pool as
	// large as the largest level, no compression and no overall timeout.
	Client *http.Client
	// Observer, when set, hears about each level and request.
	Observer Observer
}

// Run resolves the model (when c.Model is empty), sends the warm-up and then
// every level of the sweep, and returns the report. If ctx ends, it returns
// the levels finished so far, the interrupted one's finished requests and
// ctx's error.
func Run(ctx context.Context, c Config, o Options) (*Report, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	hc := o.Client
	if hc == nil {
		hc = defaultClient(c)
	}
	if c.Model == "" {
		// Bounded like a request: a server that accepts and never answers
		// must not hang the bench before its first level.
		mctx, cancel := context.WithTimeout(ctx, c.Timeout)
		ids, err := Models(mctx, hc, c.URL, c.APIKey)
		cancel()
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, ErrNoModel
		}
		c.Model = ids[0]
	}
	rep := &Report{
		Schema: Schema, Started: time.Now().UTC(), Config: c,
		Target: Target{URL: c.URL, Endpoint: c.Endpoint, Model: c.Model},
	}
	g := &generator{cfg: c, cl: newClient(hc, c.URL, c.APIKey), obs: o.Observer}
	for i := range c.Warmup {
		r := g.cl.send(ctx, c, newRequest(c, -1, i), time.Now())
		if !r.OK() {
			return nil, fmt.Errorf("warm-up request %d: %s (%s %s)", i, r.Error, r.ErrorType, r.ErrorMessage)
		}
	}
	for li, spec := range g.levels() {
		start := time.Now()
		results := g.runLevel(ctx, li, spec, start)
		elapsed := time.Since(start)
		// Requests the interruption cut short are no outcome of the server.
		kept := slices.DeleteFunc(results, func(r Result) bool { return r.Error == errInterrupted })
		interrupted := len(results) - len(kept)
		l := summarize(spec, kept, elapsed)
		l.Interrupted = interrupted
		rep.Levels = append(rep.Levels, l)
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func defaultClient(c Config) *http.Client {
	conns := c.Sessions
	for _, n := range c.Concurrency {
		conns = max(conns, n)
	}
	if len(c.Rates) > 0 {
		conns = 256 // open loop: as many as the arrivals need, most kept warm
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = conns + 4
	t.MaxIdleConnsPerHost = conns + 4
	t.DisableCompression = true // gzip would buffer the stream and hide TTFT
	return &http.Client{Transport: t}
}

// generator runs the levels of one Config; it owns nothing mutable beyond a
// level, whose results are collected by runLevel's goroutine alone.
type generator struct {
	cfg Config
	cl  *client
	obs Observer
}

// levels are the sweep's levels, before they run.
func (g *generator) levels() []Level {
	c := g.cfg
	var ls []Level
	switch c.Mode() {
	case ModeSessions:
		ls = append(ls, Level{Mode: ModeSessions, Concurrency: c.Sessions, Sessions: c.Sessions, Turns: c.Turns})
	case ModeRate:
		for _, r := range c.Rates {
			ls = append(ls, Level{Mode: ModeRate, Rate: r})
		}
	default:
		for _, n := range c.Concurrency {
			ls = append(ls, Level{Mode: ModeConcurrency, Concurrency: n})
		}
	}
	return ls
}

// runLevel sends one level's requests and returns their results in the
// order they finished.
func (g *generator) runLevel(ctx context.Context, li int, spec Level, start time.Time) []Result {
	planned := g.cfg.Requests
	if spec.Mode == ModeSessions {
		planned = spec.Sessions * spec.Turns
	}
	if g.obs != nil {
		g.obs.LevelStarted(spec, planned)
	}
	out := make(chan Result)
	go func() {
		defer close(out)
		switch spec.Mode {
		case ModeSessions:
			g.sessions(ctx, li, spec, start, out)
		case ModeRate:
			g.openLoop(ctx, li, spec.Rate, start, out)
		default:
			g.closedLoop(ctx, li, spec.Concurrency, start, out)
		}
	}()
	var results []Result
	for r := range out {
		results = append(results, r)
		if g.obs != nil {
			g.obs.RequestDone(r)
		}
	}
	return results
}

// more reports whether request i may still start.
func (g *generator) more(ctx context.Context, i int, start time.Time) bool {
	c := g.cfg
	return ctx.Err() == nil && (c.Requests == 0 || i < c.Requests) &&
		(c.Duration == 0 || time.Since(start) < c.Duration)
}

// closedLoop keeps n requests in flight: each worker sends the next request
// when its previous one ends.
func (g *generator) closedLoop(ctx context.Context, li, n int, start time.Time, out chan<- Result) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if !g.more(ctx, i, start) {
					return
				}
				out <- g.cl.send(ctx, g.cfg, newRequest(g.cfg, li, i), start)
			}
		})
	}
	wg.Wait()
}

// Arrivals are the first n send times, after a level's start, of a Poisson
// process of rate requests/s: the first at the start (as vLLM's
// benchmark_serving sends it), then exponential gaps of mean 1/rate drawn
// from a stream of seed. Pure, so the schedule is tested without a clock.
func Arrivals(rate float64, n int, seed uint64, level int) []time.Duration {
	r := seedStream(seed, level, -1, -1)
	out := make([]time.Duration, n)
	var at time.Duration
	for i := range out {
		out[i] = at
		at += arrivalGap(r, rate)
	}
	return out
}

// arrivalGap draws the time to the next arrival of a Poisson process.
func arrivalGap(r *rand.Rand, rate float64) time.Duration {
	return time.Duration(r.ExpFloat64() / rate * float64(time.Second))
}

// openLoop sends requests at Poisson arrival times whatever is in flight.
func (g *generator) openLoop(ctx context.Context, li int, rate float64, start time.Time, out chan<- Result) {
	var (
		wg    sync.WaitGroup
		r     = seedStream(g.cfg.Seed, li, -1, -1)
		at    time.Duration
		timer = time.NewTimer(0)
	)
	defer timer.Stop()
	<-timer.C
	// The schedule is Arrivals': request i at at, then the gap to the next.
	// The count is checked before waiting, so a level ends with its last
	// response, not one gap later at an arrival never sent.
	for i := 0; g.more(ctx, i, start); i++ {
		if d := g.cfg.Duration; d > 0 && at >= d {
			break
		}
		timer.Reset(time.Until(start.Add(at)))
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		if !g.more(ctx, i, start) {
			break
		}
		wg.Go(func() { out <- g.cl.send(ctx, g.cfg, newRequest(g.cfg, li, i), start) })
		at += arrivalGap(r, rate)
	}
	wg.Wait()
}

// sessions runs every session's turns in order, the sessions concurrently;
// a failed turn ends its session, and its turns not sent count as failed
// (session_aborted), so the error rate is over the turns planned.
func (g *generator) sessions(ctx context.Context, li int, spec Level, start time.Time, out chan<- Result) {
	var wg sync.WaitGroup
	for s := 1; s <= spec.Sessions; s++ {
		wg.Go(func() {
			var (
				prev   *request
				answer string
			)
			for t := 1; t <= spec.Turns && ctx.Err() == nil; t++ {
				q := nextTurn(g.cfg, li, (s-1)*spec.Turns+t-1, s, t, prev, answer)
				r := g.cl.send(ctx, g.cfg, q, start)
				out <- r
				if !r.OK() {
					if ctx.Err() != nil {
						return // the level was stopped, not the session
					}
					for rest := t + 1; rest <= spec.Turns; rest++ {
						out <- Result{Index: (s-1)*spec.Turns + rest - 1, Session: s, Turn: rest,
							Error: errSessionAborted, ErrorMessage: fmt.Sprintf("turn %d of the session failed (%s)", t, r.Error)}
					}
					return
				}
				prev, answer = q, r.answer
			}
		})
	}
	wg.Wait()
}

// sortResults orders results by index, for reports that diff cleanly.
func sortResults(rs []Result) {
	slices.SortFunc(rs, func(a, b Result) int { return a.Index - b.Index })
}
