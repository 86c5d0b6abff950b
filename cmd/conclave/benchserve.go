package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/conclave-ai/conclave/bench/serve"
)

// cmdBenchServe load-tests an OpenAI-compatible server (ours, llama-server,
// vLLM) and reports throughput and latency per concurrency or rate level.
func cmdBenchServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench serve", stderr)
	var (
		cfg                              = serve.DefaultConfig()
		endpoint, concurrency, rates     string
		promptTokens, maxTokens          int
		promptDist, outputDist, turnDist string
		outJSON, outMD, pngDir, compare  string
		asJSON                           bool
	)
	fs.StringVar(&cfg.URL, "url", cfg.URL, "server base URL (…/v1 is added)")
	fs.StringVar(&endpoint, "endpoint", string(cfg.Endpoint), "chat (/v1/chat/completions) or completions (/v1/completions)")
	fs.StringVar(&cfg.Model, "model", "", "model name to send (default: the first from GET /v1/models)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "Bearer token, when the server wants one")
	fs.IntVar(&promptTokens, "prompt-tokens", int(cfg.Prompt.A), "prompt length in words of synthetic text (≈ tokens)")
	fs.StringVar(&promptDist, "prompt-dist", "", "prompt length distribution instead of --prompt-tokens: uniform:LO-HI or normal:MEAN,STD")
	fs.IntVar(&maxTokens, "max-tokens", int(cfg.Output.A), "max_tokens of each request")
	fs.StringVar(&outputDist, "output-dist", "", "max_tokens distribution instead of --max-tokens: uniform:LO-HI or normal:MEAN,STD")
	fs.BoolVar(&cfg.IgnoreEOS, "ignore-eos", false, `send "ignore_eos": true so that the server generates exactly max_tokens`)
	floatPtr := func(dst **float64) func(string) error {
		return func(s string) error {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return err
			}
			*dst = &v
			return nil
		}
	}
	fs.Func("temperature", "sampling temperature to send (default: none, the server's own)", floatPtr(&cfg.Temperature))
	fs.Func("top-p", "top_p to send (default: none, the server's own)", floatPtr(&cfg.TopP))
	fs.StringVar(&concurrency, "concurrency", "1", "closed-loop levels, comma-separated: requests in flight")
	fs.StringVar(&rates, "rate", "", "open-loop levels instead of --concurrency, comma-separated requests/s (Poisson arrivals)")
	fs.IntVar(&cfg.Requests, "requests", cfg.Requests, "requests per level (0 with --duration: no count limit)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop starting requests in a level after this long (in-flight ones finish)")
	fs.IntVar(&cfg.Sessions, "sessions", 0, "run S concurrent multi-turn sessions instead of levels")
	fs.IntVar(&cfg.Turns, "turns", 2, "turns per session; turn k sends the history plus a new user message")
	fs.StringVar(&turnDist, "turn-tokens", cfg.TurnPrompt.String(), "words of each follow-up user message in sessions (N or a distribution)")
	seed := fs.Uint64("seed", cfg.Seed, "seed of prompts, lengths and arrivals")
	fs.IntVar(&cfg.Warmup, "warmup", 0, "unmeasured requests sent one at a time first")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "limit on one request")
	fs.StringVar(&outJSON, "out", "", "write the full JSON report to this file")
	fs.StringVar(&outMD, "md", "", "write the Markdown tables to this file")
	fs.StringVar(&pngDir, "png-dir", "", "draw PNG charts into this directory")
	fs.StringVar(&compare, "compare", "", "an earlier --out JSON: print new/old ratios per metric and level")
	fs.BoolVar(&asJSON, "json", false, "print the JSON report instead of Markdown")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg.Seed = *seed
	cfg.Endpoint = serve.Endpoint(endpoint)
	if set["duration"] && !set["requests"] {
		cfg.Requests = 0
	}
	// One mode per run: a flag of another would be dropped silently.
	if n := countSet(set, "concurrency", "rate", "sessions"); n > 1 {
		return fmt.Errorf("%w: give one of --concurrency, --rate and --sessions", errUsage)
	}
	var err error
	if cfg.Prompt, err = lengthFlag("prompt", promptTokens, promptDist); err != nil {
		return err
	}
	if cfg.Output, err = lengthFlag("output", maxTokens, outputDist); err != nil {
		return err
	}
	if cfg.TurnPrompt, err = serve.ParseDist(turnDist); err != nil {
		return fmt.Errorf("%w: --turn-tokens: %v", errUsage, err)
	}
	if cfg.Concurrency, err = parseInts("--concurrency", concurrency); err != nil {
		return err
	}
	if cfg.Rates, err = parseFloats("--rate", rates); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var old *serve.Report
	if compare != "" {
		if old, err = readServeReport(compare); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var opts serve.Options
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar := &progressBar{w: stderr}
		defer bar.finish()
		opts.Observer = bar
	}
	rep, runErr := serve.Run(ctx, cfg, opts)
	if rep == nil {
		return runErr
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "bench: interrupted (%v); reporting what finished\n", runErr)
	}
	if old != nil {
		c := serve.Compare(old, rep)
		rep.Comparison = &c
	}
	var js, md bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	if err := rep.WriteMarkdown(&md); err != nil {
		return err
	}
	if outJSON != "" {
		if err := os.WriteFile(outJSON, js.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if outMD != "" {
		if err := os.WriteFile(outMD, md.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if pngDir != "" {
		paths, err := serve.WriteCharts(rep, pngDir)
		if err != nil {
			return fmt.Errorf("charts: %w", err)
		}
		fmt.Fprintf(stderr, "bench: wrote %s\n", strings.Join(paths, ", "))
	}
	out := md.Bytes()
	if asJSON {
		out = js.Bytes()
	}
	if _, err := stdout.Write(out); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	// A level where every request failed measured nothing of the server:
	// the report says why, and the exit status says it failed.
	for _, l := range rep.Levels {
		if l.Requests > 0 && l.Completed == 0 {
			return fmt.Errorf("%w: at %s every request failed (%d)", errBenchFailed, l.Name(), l.Requests)
		}
	}
	return nil
}

// errBenchFailed is a run whose report holds a level without a success.
var errBenchFailed = errors.New("bench serve: a level measured nothing")

func countSet(set map[string]bool, names ...string) int {
	n := 0
	for _, name := range names {
		if set[name] {
			n++
		}
	}
	return n
}

// lengthFlag is --NAME-dist when given, else the fixed length n.
func lengthFlag(name string, n int, dist string) (serve.Dist, error) {
	if dist == "" {
		d := serve.Fixed(n)
		if err := d.Validate(); err != nil {
			return d, fmt.Errorf("%w: %s length: %v", errUsage, name, err)
		}
		return d, nil
	}
	d, err := serve.ParseDist(dist)
	if err != nil {
		return d, fmt.Errorf("%w: --%s-dist: %v", errUsage, name, err)
	}
	return d, nil
}

func parseInts(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: %s: %q is not a positive integer", errUsage, flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseFloats(flagName, s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || !(v > 0) {
			return nil, fmt.Errorf("%w: %s: %q is not a positive number", errUsage, flagName, f)
		}
		out = append(out, v)
	}
	return out, nil
}

func readServeReport(path string) (*serve.Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r serve.Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Schema != serve.Schema {
		return nil, fmt.Errorf("%w: %s: schema %q, want %q (a `bench serve --out` file)", errUsage, path, r.Schema, serve.Schema)
	}
	return &r, nil
}

// progressBar shows each level's progress on a terminal.
type progressBar struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (p *progressBar) LevelStarted(l serve.Level, planned int) {
	p.finish()
	max := planned
	if max == 0 {
		max = -1 // a duration bounds the level: a spinner
	}
	p.bar = progressbar.NewOptions(max,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(l.Name()),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionClearOnFinish(),
	)
}

func (p *progressBar) RequestDone(serve.Result) {
	if p.bar != nil {
		_ = p.bar.Add(1)
	}
}

func (p *progressBar) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}
