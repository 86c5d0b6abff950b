package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
)

type idLogit struct {
	ID    int32   `json:"id"`
	Logit float32 `json:"logit"`
}

// cmdLogits runs tokens through the model with teacher forcing and prints
// the top-K raw logits at every position.
func cmdLogits(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("logits", stderr)
	var (
		path, tokens string
		top          int
		asJSON, full bool
		rt           runtimeFlags
	)
	fs.StringVar(&path, "model", "", "GGUF model file")
	fs.StringVar(&tokens, "tokens", "", "comma-separated token ids (no BOS is added)")
	fs.IntVar(&top, "top", 10, "logits to print per position")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	fs.BoolVar(&full, "full", false, "with --json, also print every logit of every position")
	rt.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q (quote multi-word values)", errUsage, fs.Arg(0))
	}
	if err := rt.validate(); err != nil {
		return err
	}
	if top < 1 {
		return fmt.Errorf("%w: --top must be at least 1", errUsage)
	}
	m, err := openModel(path, false)
	if err != nil {
		return err
	}
	defer m.Close()
	ids, err := parseTokens(tokens, m.w.Vocab)
	if err != nil {
		return err
	}
	pool := kernels.NewPool(rt.threads)
	defer pool.Close()
	cache, err := rt.cache(m.w, len(ids))
	if err != nil {
		return err
	}
	r := model.NewRunnerCtx(m.w, pool, min(rt.batch, len(ids)), len(ids))
	logits, err := r.Prefill(context.Background(), cache, ids, 0, true, nil)
	if err != nil {
		return err
	}
	V := m.w.Vocab
	positions := make([][]idLogit, len(ids))
	for p := range ids {
		positions[p] = topK(logits[p*V:(p+1)*V], top)
	}
	if asJSON {
		out := map[string]any{"tokens": ids, "positions": positions}
		if full {
			rows := make([][]float32, len(ids))
			for p := range rows {
				rows[p] = logits[p*V : (p+1)*V]
			}
			out["logits"] = rows
		}
		return json.NewEncoder(stdout).Encode(out)
	}
	for p, row := range positions {
		fmt.Fprintf(stdout, "%4d %6d:", p, ids[p])
		for _, x := range row {
			fmt.Fprintf(stdout, " %d=%.4f", x.ID, x.Logit)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

// topK returns the k largest logits, highest first, ties by lower id.
func topK(row []float32, k int) []idLogit {
	all := make([]idLogit, len(row))
	for i, v := range row {
		all[i] = idLogit{int32(i), v}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].Logit > all[b].Logit })
	return all[:min(k, len(all))]
}
