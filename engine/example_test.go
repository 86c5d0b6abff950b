package engine_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

// Example serves two requests sharing a 40-token prefix on a tiny
// synthesized model: the second one reuses the first one's KV blocks.
func Example() {
	dir, err := os.MkdirTemp("", "engine-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
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
	defer f.Close()
	w, err := model.Load(f)
	if err != nil {
		log.Fatal(err)
	}

	pool := kernels.NewPool(2)
	defer pool.Close()
	ecfg := engine.DefaultConfig()
	ecfg.KVBytes = 16 << 20 // 16 MiB of F16 blocks
	e, err := engine.New(ecfg, w, pool, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()

	prefix := make([]int32, 40)
	for i := range prefix {
		prefix[i] = int32(100 + i)
	}
	for _, tail := range []int32{7, 8} {
		prompt := append(append([]int32{}, prefix...), tail)
		events, err := e.Submit(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 5})
		if err != nil {
			log.Fatal(err)
		}
		n := 0
		for ev := range events {
			if ev.HasToken {
				n++
			}
			if ev.Done {
				fmt.Printf("%d tokens, finish %s, %d of %d prompt tokens cached\n", n, ev.FinishReason, ev.CachedTokens, ev.PromptTokens)
			}
		}
	}
	st := e.Stats()
	fmt.Printf("running %d, blocks used %d, steps %d\n", st.Running, st.KVBlocksUsed, st.Steps)
	// Output:
	// 5 tokens, finish length, 0 of 41 prompt tokens cached
	// 5 tokens, finish length, 32 of 41 prompt tokens cached
	// running 0, blocks used 0, steps 10
}
