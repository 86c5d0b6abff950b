package main

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/tokenizer"
)

// loaded is an open model: the mapped file, bound weights and tokenizer.
type loaded struct {
	file *gguf.File
	w    *model.Weights
	tok  *tokenizer.Tokenizer
}

func (l *loaded) Close() error { return l.file.Close() }

// computeAll prepares the weights as a node hosting every expert does
// (model.Weights.KeepResident: packed tiles where the CPU uses them, in
// memory the process holds, everything else read in), so that a benchmark
// measures what serving runs.
func (l *loaded) computeAll() error {
	return l.w.KeepResident(func(int, int) bool { return true })
}

func openModel(path string, needTokenizer bool) (*loaded, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: --model is required", errUsage)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	w, err := model.Load(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	l := &loaded{file: f, w: w}
	if needTokenizer {
		if l.tok, err = model.LoadTokenizer(f); err != nil {
			f.Close()
			return nil, err
		}
		if err := model.CheckTokenizer(f, w, l.tok); err != nil {
			f.Close()
			return nil, err
		}
	}
	return l, nil
}

// runtimeFlags are the flags shared by commands that run a model.
type runtimeFlags struct {
	threads int
	kvType  string
	batch   int
}

func (r *runtimeFlags) register(fs interface {
	IntVar(*int, string, int, string)
	StringVar(*string, string, string, string)
}) {
	fs.IntVar(&r.threads, "threads", runtime.NumCPU(), "worker threads")
	fs.StringVar(&r.kvType, "kv-type", "f16", "KV cache element type: f16 or f32")
	fs.IntVar(&r.batch, "batch", 512, "maximum tokens per forward pass (prefill chunk)")
}

func (r *runtimeFlags) kvDType() (kernels.DType, error) {
	switch strings.ToLower(r.kvType) {
	case "f16":
		return kernels.F16, nil
	case "f32":
		return kernels.F32, nil
	}
	return 0, fmt.Errorf("%w: --kv-type %q (want f16 or f32)", errUsage, r.kvType)
}

func (r *runtimeFlags) cache(w *model.Weights, ctx int) (*kvcache.Cache, error) {
	t, err := r.kvDType()
	if err != nil {
		return nil, err
	}
	return kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: min(ctx, w.Ctx), KVDim: w.KVDim(), HeadDim: w.HeadDim, Type: t})
}

func (r *runtimeFlags) validate() error {
	if _, err := r.kvDType(); err != nil {
		return err
	}
	if r.threads < 1 {
		return fmt.Errorf("%w: --threads must be at least 1", errUsage)
	}
	if r.batch < 1 {
		return fmt.Errorf("%w: --batch must be at least 1", errUsage)
	}
	return nil
}

func parseTokens(s string, vocab int) ([]int32, error) {
	var out []int32
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: --tokens: %q is not a token id", errUsage, f)
		}
		if v < 0 || int(v) >= vocab {
			return nil, fmt.Errorf("%w: --tokens: id %d outside the vocabulary of %d", errUsage, v, vocab)
		}
		out = append(out, int32(v))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --tokens is empty", errUsage)
	}
	return out, nil
}
