package model_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/sample"
	"github.com/conclave-ai/conclave/model/synth"
)

// Example synthesizes a tiny Mixtral-style model, loads it and decodes
// greedily from a short prompt.
func Example() {
	dir, err := os.MkdirTemp("", "model-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// A deterministic random model: 2 layers, 4 experts, top-2.
	cfg, err := synth.Preset("tiny")
	if err != nil {
		log.Fatal(err)
	}
	path := filepath.Join(dir, "tiny.gguf")
	if err := synth.Write(cfg, path); err != nil {
		log.Fatal(err)
	}

	f, err := gguf.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close() // the weights point into the file's mapping
	w, err := model.Load(f)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w)

	pool := kernels.NewPool(2)
	defer pool.Close()
	r := model.NewRunner(w, pool, 16) // batches of up to 16 rows
	cache, err := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: 64, KVDim: w.KVDim(), Type: kernels.F16})
	if err != nil {
		log.Fatal(err)
	}
	greedy, err := sample.New(sample.DefaultConfig(), w.Vocab)
	if err != nil {
		log.Fatal(err)
	}

	prompt := []int32{1, 300, 301, 302}
	out, timings, err := r.Generate(context.Background(), cache, prompt, 8, greedy, nil, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("prompt %d tokens, generated %d tokens, cache holds %d positions\n",
		timings.PromptTokens, len(out), cache.Len())
	// Output:
	// llama dim=64 layers=2 heads=4/2 ffn=96 experts=4 top-2 vocab=512 ctx=256
	// prompt 4 tokens, generated 8 tokens, cache holds 11 positions
}
