package bench

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/conclave-ai/conclave/bench/llamacpp"
)

// Row is one test run by both engines.
type Row struct {
	Name        string  `json:"name"`
	Ours        float64 `json:"ours_tokens_per_s"`
	OursStddev  float64 `json:"ours_stddev"`
	Theirs      float64 `json:"llamacpp_tokens_per_s"`
	TheirStddev float64 `json:"llamacpp_stddev"`
	Ratio       float64 `json:"ratio"` // Ours / Theirs: above 1 is faster than llama.cpp
}

// Comparison is a Report set beside llama-bench results for the same file
// and thread count.
type Comparison struct {
	Rows []Row `json:"rows"`
	// Missing names our tests llama-bench did not run (and vice versa).
	Missing []string `json:"missing,omitempty"`
	// Decode bandwidths in 1e9 bytes/s: BytesPerToken × each engine's tgN
	// rate, and the triad's.
	OursGBs  float64 `json:"ours_decode_gbs"`
	TheirGBs float64 `json:"llamacpp_decode_gbs"`
	MemGBs   float64 `json:"mem_bandwidth_gbs"`
	// Warnings name differences in the setup (threads, KV type) that make
	// the ratios unfair.
	Warnings []string        `json:"warnings,omitempty"`
	Ref      llamacpp.Result `json:"llamacpp"` // the first reference result, for its setup
}

// Compare pairs each of our tests with llama-bench's test of the same name
// (pp512 with pp512, tg128 with tg128, depth 0).
func Compare(r Report, ref []llamacpp.Result) Comparison {
	var c Comparison
	if len(ref) > 0 {
		c.Ref = ref[0]
	}
	add := func(name string, t Test, nPrompt, nGen int) {
		l, ok := llamacpp.Find(ref, nPrompt, nGen)
		if !ok {
			c.Missing = append(c.Missing, name+": no llama.cpp result")
			return
		}
		c.Rows = append(c.Rows, Row{
			Name: name, Ours: t.TokensPerSec, OursStddev: t.StddevTs,
			Theirs: l.TokensPerSec, TheirStddev: l.StddevTs, Ratio: t.TokensPerSec / l.TokensPerSec,
		})
	}
	for _, p := range r.Prefill {
		add(p.Name, p.Test, p.Tokens, 0)
	}
	if d := r.Decode; d != nil {
		add(d.Name, d.Test, 0, d.Tokens)
		c.OursGBs = d.BandwidthGBs
		if l, ok := llamacpp.Find(ref, 0, d.Tokens); ok {
			c.TheirGBs = float64(r.Model.BytesPerToken) * l.TokensPerSec / 1e9
		}
	}
	c.MemGBs = r.MemBandwidthGBs
	for _, l := range ref {
		if l.NDepth != 0 || l.NPrompt > 0 && l.NGen > 0 {
			continue
		}
		if !r.has(l.NPrompt, l.NGen) {
			c.Missing = append(c.Missing, l.Name()+": no conclave result")
		}
		if l.Threads != r.Threads {
			c.Warnings = appendOnce(c.Warnings, fmt.Sprintf("threads differ: ours %d, llama.cpp %d", r.Threads, l.Threads))
		}
		if kv := llamaKVType(r.KVType); l.TypeK != "" && l.TypeK != kv {
			c.Warnings = appendOnce(c.Warnings, fmt.Sprintf("KV cache types differ: ours %s, llama.cpp %s/%s", kv, l.TypeK, l.TypeV))
		}
	}
	return c
}

func (r Report) has(nPrompt, nGen int) bool {
	if nGen == 0 {
		for _, p := range r.Prefill {
			if p.Tokens == nPrompt {
				return true
			}
		}
		return false
	}
	return nPrompt == 0 && r.Decode != nil && r.Decode.Tokens == nGen
}

func llamaKVType(s string) string {
	switch s {
	case "f16", "F16":
		return "f16"
	case "f32", "F32":
		return "f32"
	}
	return s
}

func appendOnce(xs []string, s string) []string {
	for _, x := range xs {
		if x == s {
			return xs
		}
	}
	return append(xs, s)
}

// WriteTable prints the comparison for people.
func (c Comparison) WriteTable(w io.Writer) error {
	if c.Ref.BuildCommit != "" || c.Ref.ModelType != "" {
		fa := map[int]string{-1: "auto", 0: "off", 1: "on"}[c.Ref.FlashAttn]
		fmt.Fprintf(w, "llama.cpp %s (%s), %s, %d threads, ubatch %d, flash-attn %s\n",
			c.Ref.BuildCommit, c.Ref.Backends, c.Ref.ModelType, c.Ref.Threads, c.Ref.NUBatch, fa)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "test\tconclave tok/s\tllama.cpp tok/s\tconclave/llama.cpp\t")
	for _, r := range c.Rows {
		fmt.Fprintf(tw, "%s\t%.2f ± %.2f\t%.2f ± %.2f\t%.3f\t\n", r.Name, r.Ours, r.OursStddev, r.Theirs, r.TheirStddev, r.Ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if c.OursGBs > 0 || c.TheirGBs > 0 {
		fmt.Fprintf(w, "decode weight traffic: conclave %.2f GB/s, llama.cpp %.2f GB/s", c.OursGBs, c.TheirGBs)
		if c.MemGBs > 0 {
			fmt.Fprintf(w, ", triad %.2f GB/s (%.0f%% / %.0f%%)", c.MemGBs, 100*c.OursGBs/c.MemGBs, 100*c.TheirGBs/c.MemGBs)
		}
		fmt.Fprintln(w)
	}
	for _, m := range c.Missing {
		fmt.Fprintf(w, "not compared: %s\n", m)
	}
	for _, s := range c.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
	return nil
}
