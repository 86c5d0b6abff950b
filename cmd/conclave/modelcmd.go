package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

// cmdSynth writes a deterministic random-weight model.
func cmdSynth(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model synth", stderr)
	var (
		preset, typ, out string
		c                synth.Config
	)
	fs.StringVar(&preset, "preset", "tiny", "starting shape: tiny, demo or bench")
	fs.IntVar(&c.Dim, "dim", 0, "embedding width")
	fs.IntVar(&c.Layers, "layers", 0, "transformer blocks")
	fs.IntVar(&c.Heads, "heads", 0, "attention heads")
	fs.IntVar(&c.KVHeads, "kv-heads", 0, "key/value heads")
	fs.IntVar(&c.FFN, "ffn", 0, "expert (or dense FFN) hidden width")
	fs.IntVar(&c.Experts, "experts", 0, "experts per layer; 0 writes a dense model")
	fs.IntVar(&c.TopK, "top-k", 0, "experts used per token")
	fs.IntVar(&c.Vocab, "vocab", 0, "vocabulary size")
	fs.IntVar(&c.Ctx, "ctx", 0, "context length")
	fs.StringVar(&typ, "type", "", "weight type: f32, f16, q8_0 or q4_0")
	fs.Uint64Var(&c.Seed, "seed", 0, "random seed")
	fs.BoolVar(&c.LegacyExperts, "legacy-experts", false, "write one tensor per expert (blk.N.ffn_gate.E) instead of merged _exps tensors")
	fs.BoolVar(&c.TiedOutput, "tied-output", false, "omit output.weight (the output shares token_embd)")
	fs.StringVar(&out, "out", "", "output GGUF path")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q (quote multi-word values)", errUsage, fs.Arg(0))
	}
	if out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	base, err := synth.Preset(preset)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// Flags given on the command line override the preset.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	pick := func(name string, v int, dst *int) {
		if set[name] {
			*dst = v
		}
	}
	pick("dim", c.Dim, &base.Dim)
	pick("layers", c.Layers, &base.Layers)
	pick("heads", c.Heads, &base.Heads)
	pick("kv-heads", c.KVHeads, &base.KVHeads)
	pick("ffn", c.FFN, &base.FFN)
	pick("experts", c.Experts, &base.Experts)
	pick("top-k", c.TopK, &base.TopK)
	pick("vocab", c.Vocab, &base.Vocab)
	pick("ctx", c.Ctx, &base.Ctx)
	if set["experts"] && !set["top-k"] {
		base.TopK = min(base.TopK, base.Experts)
	}
	if set["seed"] {
		base.Seed = c.Seed
	}
	if set["type"] {
		if base.Type, err = kernels.ParseDType(typ); err != nil {
			return fmt.Errorf("%w: --type: %v", errUsage, err)
		}
	}
	base.LegacyExperts, base.TiedOutput = c.LegacyExperts, c.TiedOutput
	if err := base.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := synth.Write(base, out); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s\n", out)
	return nil
}

// cmdInspect describes a model file.
func cmdInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model inspect", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	// Accept the file before or after flags.
	var path string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		path, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if path == "" && len(rest) > 0 {
		path, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, rest[0])
	}
	if path == "" {
		return fmt.Errorf("%w: model inspect FILE", errUsage)
	}
	m, err := openModel(path, false)
	if err != nil {
		return err
	}
	defer m.Close()
	w := m.w
	total, active := w.Params()
	types := w.TensorTypes()
	info := map[string]any{
		"path":             path,
		"gguf_version":     m.file.Version,
		"architecture":     w.Arch,
		"config":           w.Config,
		"tensor_types":     types,
		"params_total":     total,
		"params_active":    active,
		"bytes_per_token":  w.BytesPerToken(),
		"tensors":          len(m.file.Tensors),
		"metadata_entries": len(m.file.KVs),
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(info)
	}
	fmt.Fprintf(stdout, "file:          %s (GGUF v%d, %d tensors, %d metadata entries)\n", path, m.file.Version, len(m.file.Tensors), len(m.file.KVs))
	fmt.Fprintf(stdout, "architecture:  %s", w.Arch)
	if w.MoE() {
		fmt.Fprintf(stdout, " (mixture of experts: %d experts, top-%d)\n", w.Experts, w.TopK)
	} else {
		fmt.Fprintln(stdout, " (dense)")
	}
	fmt.Fprintf(stdout, "shape:         dim %d, %d layers, %d heads (%d kv, head dim %d), ffn %d, vocab %d, context %d\n",
		w.Dim, w.Layers, w.Heads, w.KVHeads, w.HeadDim, w.FFN, w.Vocab, w.Ctx)
	fmt.Fprintf(stdout, "rope:          base %g, %d dims; rms eps %g; tied output %v\n", w.RopeBase, w.RopeDim, w.NormEps, w.TiedOutput)
	var names []string
	for t := range types {
		names = append(names, t)
	}
	sort.Strings(names)
	fmt.Fprint(stdout, "matrix types: ")
	for _, t := range names {
		fmt.Fprintf(stdout, " %s×%d", t, types[t])
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, "parameters:    %s total, %s active per token\n", human(total), human(active))
	fmt.Fprintf(stdout, "streamed:      %s of weights per decoded token\n", humanBytes(w.BytesPerToken()))
	return nil
}

func human(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f K", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB (%d bytes)", float64(n)/(1<<30), n)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n)
	}
	return fmt.Sprintf("%d bytes", n)
}

// cmdLoad makes a model file the cluster's live model: it describes the
// file as a node with --model does (cluster.InspectModel: manifest digest,
// layers, experts, top-k, expert bytes), posts that to a node's admin API
// (POST /admin/v1/model) and waits until every expert of the model has a
// ready replica. The file itself is not sent: some node must hold it (started
// with --model on a file with the same digest); nodes without it fetch the
// parts they need from that holder (cluster.FetchModel).
func cmdLoad(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model load", stderr)
	addr := fs.String("addr", "http://127.0.0.1:8080", "admin API of any node")
	akey := fs.String("admin-key", "", adminKeyUsage)
	asJSON := fs.Bool("json", false, "print the result as JSON (progress goes to stderr)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the experts to be ready")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: model load FILE --addr URL", errUsage)
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	mod, err := cluster.InspectModel(pos[0])
	if err != nil {
		return err
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	ac := &cluster.AdminClient{Base: base, Key: adminKey(*akey)}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	r, err := ac.LoadModel(ctx, mod)
	if err != nil {
		return fmt.Errorf("model load %s: %w", pos[0], err)
	}
	fmt.Fprintf(progress, "model %s v%d (digest %s): %d layers × %d experts, top-%d, %s per expert; hosts %s\n",
		r.Model.ID, r.Model.Version, r.Model.Digest[:12], r.Model.Layers, r.Model.Experts, r.Model.TopK,
		ibytes(r.Model.ExpertBytes), strings.Join(r.Hosts, ","))
	ready, total, epoch, err := waitModelReady(ctx, ac, r.Model, func(ready, total int) {
		fmt.Fprintf(progress, "experts ready: %d/%d\n", ready, total)
	})
	if err != nil {
		return fmt.Errorf("model load %s: %w", pos[0], err)
	}
	if *asJSON {
		return printJSON(stdout, map[string]any{"model": r.Model, "hosts": r.Hosts, "epoch": epoch,
			"experts_ready": ready, "experts": total})
	}
	fmt.Fprintf(stdout, "model %s is live: %d/%d experts ready (epoch %d)\n", r.Model.ID, ready, total, epoch)
	return nil
}

// waitModelReady polls the map until mod is the live model and every one of
// its experts has a ready replica, calling progress when the count changes.
func waitModelReady(ctx context.Context, ac *cluster.AdminClient, mod router.Model,
	progress func(ready, total int)) (ready, total int, epoch uint64, err error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := -1
	var lastErr error
	for {
		m, err := ac.Map(ctx)
		switch {
		case err != nil:
			lastErr = err // the answering node may be changing leader; keep polling
		case m.Model == nil || m.Model.Digest != mod.Digest || m.Model.ID != mod.ID || m.Model.Version != mod.Version:
			live := "none"
			if m.Model != nil {
				live = fmt.Sprintf("%s v%d", m.Model.ID, m.Model.Version)
			}
			return 0, 0, m.Epoch, fmt.Errorf("the live model changed meanwhile (now %s)", live)
		default:
			ready, total = cluster.ReadyExperts(m)
			if ready != last {
				progress(ready, total)
				last = ready
			}
			if ready == total {
				return ready, total, m.Epoch, nil
			}
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return ready, total, 0, fmt.Errorf("%d/%d experts ready: %w (last error: %v)", ready, total, ctx.Err(), lastErr)
			}
			return ready, total, 0, fmt.Errorf("%d/%d experts ready: %w", ready, total, ctx.Err())
		case <-tick.C:
		}
	}
}
