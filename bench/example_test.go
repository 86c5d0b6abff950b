package bench_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/conclave-ai/conclave/bench"
	"github.com/conclave-ai/conclave/bench/llamacpp"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/synth"
)

// Measure a synthesized model in process: two prompt lengths and a short
// generation.
func ExampleRun() {
	c, _ := synth.Preset("tiny")
	dir, err := os.MkdirTemp("", "bench-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "tiny.gguf")
	if err := synth.Write(c, path); err != nil {
		panic(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	w, err := model.Load(f)
	if err != nil {
		panic(err)
	}
	cfg := bench.Config{Prompts: []int{8, 16}, Gen: 4, Reps: 1, Warmup: true, Vocab: w.Vocab}
	cache, _ := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: cfg.Ctx(), KVDim: w.KVDim(), Type: kernels.F16})
	pool := kernels.NewPool(2)
	defer pool.Close()
	tm, err := bench.Run(context.Background(), bench.NewRunnerEngine(model.NewRunner(w, pool, 16), cache), cfg)
	if err != nil {
		panic(err)
	}
	for _, t := range tm.Prefill {
		fmt.Println(t.Name, t.TokensPerSec > 0)
	}
	fmt.Println(tm.Decode.Name, tm.Decode.TokensPerSec > 0)
	// Output:
	// pp8 true
	// pp16 true
	// tg4 true
}

// Set our report beside llama-bench's results for the same file.
func ExampleCompare() {
	ours := bench.NewReport(bench.ModelInfo{BytesPerToken: 1e8}, bench.Timings{
		Prefill: []bench.Test{{Name: "pp512", Tokens: 512, TokensPerSec: 100}},
		Decode:  &bench.Test{Name: "tg128", Tokens: 128, TokensPerSec: 15},
	})
	ours.Threads, ours.KVType = 2, "f16"
	ref := []llamacpp.Result{
		{NPrompt: 512, TokensPerSec: 200, Threads: 2, TypeK: "f16"},
		{NGen: 128, TokensPerSec: 30, Threads: 2, TypeK: "f16"},
	}
	for _, r := range bench.Compare(ours, ref).Rows {
		fmt.Printf("%s %.2f\n", r.Name, r.Ratio)
	}
	// Output:
	// pp512 0.50
	// tg128 0.50
}
