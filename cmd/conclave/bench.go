package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/conclave-ai/conclave/bench"
	"github.com/conclave-ai/conclave/bench/llamacpp"
	"github.com/conclave-ai/conclave/bench/membw"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
)

const benchUsage = `Usage:
  conclave bench model   --model F [--prompt 256,512] [--gen 128] [--reps R] [--threads N] [--json]
  conclave bench membw   [--threads N] [--mib 512] [--json]
  conclave bench compare --ours OURS.json[,…] --llamacpp LLAMA_BENCH.json[,…] [--json]
  conclave bench serve   --url http://HOST:PORT [--concurrency 1,4,16 | --rate R | --sessions S --turns T] [--json]

Run "conclave bench COMMAND -h" for a command's flags.
`

func cmdBench(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return fmt.Errorf("%w: bench needs a command: model, membw, compare or serve", errUsage)
	}
	if isHelp(args[0]) {
		fmt.Fprint(stdout, benchUsage)
		return nil
	}
	switch args[0] {
	case "model":
		return cmdBenchModel(args[1:], stdout, stderr)
	case "membw":
		return cmdBenchMembw(args[1:], stdout, stderr)
	case "compare":
		return cmdBenchCompare(args[1:], stdout, stderr)
	case "serve":
		return cmdBenchServe(args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown bench command %q", errUsage, args[0])
}

// membwFlags configure the triad measurement.
type membwFlags struct {
	mib, reps int
}

func (m *membwFlags) register(fs interface {
	IntVar(*int, string, int, string)
}, prefix string) {
	d := membw.DefaultConfig()
	fs.IntVar(&m.mib, prefix+"mib", int(d.ArrayBytes>>20), "MiB per triad array (three are allocated; shrunk to fit available memory)")
	fs.IntVar(&m.reps, prefix+"reps", d.Reps, "triad passes; the fastest counts")
}

func (m *membwFlags) config(threads int, stderr io.Writer) membw.Config {
	c := membw.Config{ArrayBytes: int64(m.mib) << 20, Threads: threads, Reps: m.reps}
	if avail, ok := membw.AvailableBytes(); ok && 3*c.ArrayBytes > avail/2 {
		c.ArrayBytes = max(avail/6, 8<<10)
		fmt.Fprintf(stderr, "bench: %s available; triad arrays shrunk to %s\n", bench.Bytes(avail), bench.Bytes(c.ArrayBytes))
	}
	return c
}

func measureMembw(c membw.Config) (membw.Result, error) {
	r, err := membw.Measure(c)
	debug.FreeOSMemory() // give the arrays back before anything else is measured
	return r, err
}

func cmdBenchModel(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench model", stderr)
	var (
		path, prompts         string
		asJSON, noMem, noPeak bool
		noWarmup              bool
		rt                    runtimeFlags
		mf                    membwFlags
		cfg                   = bench.DefaultConfig()
	)
	fs.StringVar(&path, "model", "", "GGUF model file")
	fs.StringVar(&prompts, "prompt", "512", "prompt lengths to measure, comma-separated (ppN tests); empty for none")
	fs.StringVar(&prompts, "prompt-tokens", "512", "same as --prompt")
	fs.IntVar(&cfg.Gen, "gen", cfg.Gen, "tokens to decode in the tgN test (0: none)")
	fs.IntVar(&cfg.Gen, "gen-tokens", cfg.Gen, "same as --gen")
	fs.IntVar(&cfg.Reps, "reps", cfg.Reps, "repetitions of each test")
	fs.BoolVar(&noWarmup, "no-warmup", false, "skip the untimed warm-up prefill and decode")
	fs.BoolVar(&noMem, "no-membw", false, "skip the memory bandwidth (triad) measurement")
	fs.BoolVar(&noPeak, "no-peak", false, "skip the int8/fp32 compute-peak measurement")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of a table")
	rt.register(fs)
	mf.register(fs, "membw-")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if err := rt.validate(); err != nil {
		return err
	}
	var err error
	if cfg.Prompts, err = parseLengths(prompts); err != nil {
		return err
	}
	cfg.Warmup = !noWarmup
	m, err := openModel(path, false)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.computeAll(); err != nil {
		return err
	}
	cfg.Vocab = m.w.Vocab
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if cfg.Ctx() > m.w.Ctx {
		return fmt.Errorf("%w: the tests need %d positions; the model's context is %d", errUsage, cfg.Ctx(), m.w.Ctx)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	cache, err := rt.cache(m.w, cfg.Ctx())
	if err != nil {
		return err
	}
	pool := kernels.NewPool(rt.threads)
	defer pool.Close()
	rows := 1
	for _, p := range cfg.Prompts {
		rows = max(rows, min(p, rt.batch))
	}
	runner := model.NewRunner(m.w, pool, rows)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	busy, ok := bench.BusyCPUs(250 * time.Millisecond)
	if !ok {
		busy = -1
	}
	tm, err := bench.Run(ctx, bench.NewRunnerEngine(runner, cache), cfg)
	if err != nil {
		return err
	}
	rep := bench.NewReport(bench.DescribeModel(path, st.Size(), m.w), tm)
	rep.Threads, rep.Batch, rep.KVType, rep.Reps = rt.threads, rt.batch, strings.ToLower(rt.kvType), cfg.Reps
	rep.KVCacheBytes, rep.BusyCPUs = cache.Bytes(), busy
	if peak, ok := bench.PeakRSS(); ok {
		rep.SetRSS(peak) // before the triad's arrays raise the high-water mark
	}
	runtime.KeepAlive(cache)
	if !noMem {
		r, err := measureMembw(mf.config(rt.threads, stderr))
		if err != nil {
			return err
		}
		rep.SetMemBandwidth(r)
	}
	if !noPeak {
		rep.SetPeak(bench.MeasurePeak(rt.threads, 100*time.Millisecond))
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(stdout)
}

func cmdBenchMembw(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench membw", stderr)
	var (
		threads int
		asJSON  bool
		mf      membwFlags
	)
	fs.IntVar(&threads, "threads", runtime.NumCPU(), "threads")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	mf.register(fs, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	c := mf.config(threads, stderr)
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	r, err := measureMembw(c)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	_, err = fmt.Fprintf(stdout, "triad a = b + s·c, 3 × %s, %d threads: best %.2f GB/s, mean %.2f GB/s over %d passes (STREAM counting: 24 bytes/element, write-allocate traffic not counted)\n",
		bench.Bytes(r.ArrayBytes), r.Threads, r.BestGBs, r.MeanGBs, r.Reps)
	return err
}

func cmdBenchCompare(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench compare", stderr)
	var (
		ours, theirs string
		asJSON       bool
	)
	fs.StringVar(&ours, "ours", "", "JSON from `conclave bench model --json` (comma-separated for alternating pairs)")
	fs.StringVar(&theirs, "llamacpp", "", "JSON from `llama-bench -o json` on the same file (comma-separated, paired with --ours)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if ours == "" || theirs == "" {
		return fmt.Errorf("%w: --ours and --llamacpp are required", errUsage)
	}
	if strings.Contains(ours, ",") || strings.Contains(theirs, ",") {
		return comparePairs(strings.Split(ours, ","), strings.Split(theirs, ","), asJSON, stdout)
	}
	data, err := os.ReadFile(ours)
	if err != nil {
		return err
	}
	var rep bench.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("%s: %w", ours, err)
	}
	f, err := os.Open(theirs)
	if err != nil {
		return err
	}
	defer f.Close()
	ref, err := llamacpp.Parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", theirs, err)
	}
	c := bench.Compare(rep, ref)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(c)
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	return c.WriteTable(stdout)
}

// parseLengths reads "256,512" into token counts; "" is none.
func parseLengths(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: --prompt: %q is not a positive length", errUsage, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// comparePairs summarises alternating runs: the i-th of ours pairs with the
// i-th of theirs, and each test's median ratio is reported.
func comparePairs(ours, theirs []string, asJSON bool, stdout io.Writer) error {
	if len(ours) != len(theirs) {
		return fmt.Errorf("%w: %d --ours files but %d --llamacpp files", errUsage, len(ours), len(theirs))
	}
	var pairs []bench.Comparison
	for i := range ours {
		c, err := loadComparison(ours[i], theirs[i])
		if err != nil {
			return err
		}
		pairs = append(pairs, c)
	}
	s := bench.Summarize(pairs)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	return s.WriteTable(stdout)
}

func loadComparison(ours, theirs string) (bench.Comparison, error) {
	data, err := os.ReadFile(ours)
	if err != nil {
		return bench.Comparison{}, err
	}
	var rep bench.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return bench.Comparison{}, fmt.Errorf("%s: %w", ours, err)
	}
	f, err := os.Open(theirs)
	if err != nil {
		return bench.Comparison{}, err
	}
	defer f.Close()
	ref, err := llamacpp.Parse(f)
	if err != nil {
		return bench.Comparison{}, fmt.Errorf("%s: %w", theirs, err)
	}
	return bench.Compare(rep, ref), nil
}
