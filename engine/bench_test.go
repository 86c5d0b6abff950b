package engine

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
)

// benchWeights is a synthesized preset, or the GGUF file named by
// $CONCLAVE_ENGINE_BENCH_GGUF (e.g. var/bench.gguf).
func benchWeights(b *testing.B, preset string) (*model.Weights, string) {
	path := os.Getenv("CONCLAVE_ENGINE_BENCH_GGUF")
	if path == "" {
		return testWeights(b, preset, nil), preset
	}
	f, err := gguf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	w, err := model.Load(f)
	if err != nil {
		b.Fatal(err)
	}
	// As a node serving every expert keeps it (packed tiles included).
	if err := w.KeepResident(func(int, int) bool { return true }); err != nil {
		b.Fatal(err)
	}
	return w, "file"
}

// BenchmarkDecodeStreams measures aggregate decode throughput (tokens per
// second over all streams, from every stream's first token to the last
// one's end) with 1 and 16 concurrent streams on 2 threads. Batching shares
// each step's weight streaming across the streams, so the ratio of the two
// is the gain continuous batching gives.
func BenchmarkDecodeStreams(b *testing.B) {
	presets := []string{"demo", "bench"}
	if testing.Short() || os.Getenv("CONCLAVE_ENGINE_BENCH_GGUF") != "" {
		presets = presets[:1] // the file replaces the presets
	}
	for _, preset := range presets {
		w, name := benchWeights(b, preset)
		for _, streams := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/streams-%d", name, streams), func(b *testing.B) {
				pool := kernels.NewPool(2)
				defer pool.Close()
				cfg := DefaultConfig()
				cfg.Ctx = 512
				cfg.KVBytes = 0
				cfg.KVBlocks = 16 * 512 / cfg.BlockSize
				e, err := New(cfg, w, pool, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer e.Close()
				if err := e.Warm(context.Background(), nil); err != nil { // as a server does before it is ready
					b.Fatal(err)
				}
				const gen = 64
				var decoded int
				var decodeTime time.Duration
				for i := 0; b.Loop(); i++ {
					var wg sync.WaitGroup
					firsts := make([]time.Time, streams)
					var last time.Time
					var mu sync.Mutex
					for s := range streams {
						r := Request{Prompt: tokens(32, w.Vocab, uint64(1000*i+s)), MaxTokens: gen, IgnoreEOS: true}
						ch, err := e.Submit(context.Background(), r)
						if err != nil {
							b.Fatal(err)
						}
						wg.Add(1)
						go func() {
							defer wg.Done()
							n := 0
							for ev := range ch {
								if ev.HasToken {
									if n == 0 {
										firsts[s] = time.Now()
									}
									n++
								}
							}
							mu.Lock()
							if now := time.Now(); now.After(last) {
								last = now
							}
							mu.Unlock()
						}()
					}
					wg.Wait()
					start := firsts[0]
					for _, f := range firsts {
						if f.After(start) {
							start = f // decode phase: every stream has its first token
						}
					}
					decodeTime += last.Sub(start)
					decoded += streams * (gen - 1)
				}
				b.ReportMetric(float64(decoded)/decodeTime.Seconds(), "tok/s")
			})
		}
	}
}

// BenchmarkPrefillWave measures a burst: 16 prompts of 38 tokens (the
// serving goal's wave: 32 prompt tokens and the template's) submitted at
// once, until every one has its first token. It reports the wave's time
// (the 16-stream TTFT a burst sees) and prompt tokens per second; the
// continuous batcher fills its steps with the prompts as they arrive.
func BenchmarkPrefillWave(b *testing.B) {
	w, name := benchWeights(b, "bench")
	const streams, plen = 16, 38
	b.Run(name, func(b *testing.B) {
		pool := kernels.NewPool(2)
		defer pool.Close()
		cfg := DefaultConfig()
		cfg.Ctx = 512
		cfg.KVBytes = 0
		cfg.KVBlocks = streams * 512 / cfg.BlockSize
		e, err := New(cfg, w, pool, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		if err := e.Warm(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
		var total time.Duration
		waves := 0
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			var wg sync.WaitGroup
			for s := range streams {
				ch, err := e.Submit(context.Background(), Request{Prompt: tokens(plen, w.Vocab, uint64(streams*i+s+1)), MaxTokens: 1, IgnoreEOS: true})
				if err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range ch {
					}
				}()
			}
			wg.Wait()
			total += time.Since(start)
			waves++
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(waves), "ms/wave")
		b.ReportMetric(float64(streams*plen*waves)/total.Seconds(), "prompt-tok/s")
	})
}
