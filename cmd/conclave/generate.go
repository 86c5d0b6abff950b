package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/sample"
	"github.com/conclave-ai/conclave/model/tokenizer"
)

func cmdGenerate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("generate", stderr)
	var (
		path, prompt, tokens string
		maxTokens            int
		chat, asJSON         bool
		ignoreEOS            bool
		cpuProfile           string
		rt                   runtimeFlags
		sc                   = sample.DefaultConfig()
		seed                 uint64
	)
	fs.StringVar(&path, "model", "", "GGUF model file")
	fs.StringVar(&prompt, "prompt", "", "prompt text")
	fs.StringVar(&tokens, "tokens", "", "prompt as comma-separated token ids (no BOS is added)")
	fs.IntVar(&maxTokens, "max-tokens", 64, "tokens to generate at most")
	fs.BoolVar(&chat, "chat", false, "wrap the prompt as a user message with the model's chat template")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of streaming text")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the generation to this file")
	fs.BoolVar(&ignoreEOS, "ignore-eos", false, "keep generating past end-of-generation tokens (benchmarks, parity)")
	fs.Func("temperature", "sampling temperature; 0 is greedy (default 0)", floatFlag(&sc.Temperature))
	fs.IntVar(&sc.TopK, "top-k", 0, "keep the K most likely tokens (0: off)")
	fs.Func("top-p", "nucleus sampling threshold (default 1: off)", floatFlag(&sc.TopP))
	fs.Func("min-p", "drop tokens below min-p × p(top) (default 0: off)", floatFlag(&sc.MinP))
	fs.Func("repeat-penalty", "llama.cpp repetition penalty (default 1: off)", floatFlag(&sc.RepeatPenalty))
	fs.Uint64Var(&seed, "seed", 0, "sampling seed")
	rt.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q (quote multi-word values)", errUsage, fs.Arg(0))
	}
	sc.Seed = seed
	if err := rt.validate(); err != nil {
		return err
	}
	if (prompt == "") == (tokens == "") {
		return fmt.Errorf("%w: give exactly one of --prompt and --tokens", errUsage)
	}
	if maxTokens < 1 {
		return fmt.Errorf("%w: --max-tokens must be at least 1", errUsage)
	}
	if err := sc.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	m, err := openModel(path, true)
	if err != nil {
		return err
	}
	defer m.Close()

	var ids []int32
	if tokens != "" {
		if ids, err = parseTokens(tokens, m.w.Vocab); err != nil {
			return err
		}
	} else {
		text := prompt
		addSpecial := true
		if chat {
			if text, err = m.tok.ApplyChatTemplate([]tokenizer.Message{{Role: "user", Content: prompt}}, true); err != nil {
				return err
			}
			addSpecial = false // the template writes BOS itself
		}
		ids = m.tok.Encode(text, addSpecial, true)
	}
	sc.PromptLen = len(ids) // penalties count the generated tokens, as the server's do
	smp, err := sample.New(sc, m.w.Vocab)
	if err != nil {
		return err
	}
	pool := kernels.NewPool(rt.threads)
	defer pool.Close()
	cache, err := rt.cache(m.w, len(ids)+maxTokens)
	if err != nil {
		return err
	}
	// Attention's scratch for the positions this run reaches, not the whole
	// context the model claims.
	r := model.NewRunnerCtx(m.w, pool, min(rt.batch, max(len(ids), 1)), len(ids)+maxTokens)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	var onToken func(int32)
	if !asJSON {
		onToken = func(t int32) {
			if !m.tok.IsEOG(t) {
				stdout.Write(m.tok.TokenBytes(t))
			}
		}
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	stopAt := m.tok.IsEOG
	if ignoreEOS {
		stopAt = nil
	}
	out, tm, err := r.Generate(ctx, cache, ids, maxTokens, smp, stopAt, onToken, nil)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"prompt_tokens": ids,
			"tokens":        out,
			"text":          m.tok.Decode(out),
			"timings": map[string]any{
				"prompt_tokens":        tm.PromptTokens,
				"generated_tokens":     tm.GeneratedTokens,
				"prefill_ms":           tm.Prefill.Seconds() * 1e3,
				"decode_ms":            tm.Decode.Seconds() * 1e3,
				"prefill_tokens_per_s": tm.PrefillTokensPerSec(),
				"decode_tokens_per_s":  tm.DecodeTokensPerSec(),
				"threads":              rt.threads,
			},
		})
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stderr, "prompt: %d tokens in %.1f ms (%.1f tok/s); generated: %d tokens (%.1f tok/s)\n",
		tm.PromptTokens, tm.Prefill.Seconds()*1e3, tm.PrefillTokensPerSec(), tm.GeneratedTokens, tm.DecodeTokensPerSec())
	return nil
}

func floatFlag(dst *float32) func(string) error {
	return func(s string) error {
		var v float64
		if _, err := fmt.Sscan(s, &v); err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		*dst = float32(v)
		return nil
	}
}
