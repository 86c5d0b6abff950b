package sample_test

import (
	"fmt"

	"github.com/conclave-ai/conclave/model/sample"
)

// Greedy decoding picks the largest logit; a repetition penalty steers it
// away from a token already in the history.
func ExampleSampler_Sample() {
	logits := []float32{1.0, 3.0, 2.9, -1.0}

	greedy, err := sample.New(sample.DefaultConfig(), len(logits))
	if err != nil {
		panic(err)
	}
	// Sample may rewrite logits with penalties, so pass a copy to keep them.
	fmt.Println(greedy.Sample(append([]float32(nil), logits...), nil))

	cfg := sample.DefaultConfig()
	cfg.RepeatPenalty = 1.3 // token 1's logit 3.0 becomes 3.0/1.3 ≈ 2.31
	penalised, err := sample.New(cfg, len(logits))
	if err != nil {
		panic(err)
	}
	history := []int32{1}
	fmt.Println(penalised.Sample(append([]float32(nil), logits...), history))
	// Output:
	// 1
	// 2
}

// A seeded sampler replays the same tokens after Reset.
func ExampleSampler_Reset() {
	cfg := sample.Config{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: 1234}
	logits := []float32{2, 1.8, 1.5, 0.2, -1}
	s, err := sample.New(cfg, len(logits))
	if err != nil {
		panic(err)
	}
	draw := func() (out []int32) {
		for range 8 {
			out = append(out, s.Sample(append([]float32(nil), logits...), nil))
		}
		return out
	}
	first := draw()
	s.Reset()
	fmt.Println(fmt.Sprint(first) == fmt.Sprint(draw()))
	// Output: true
}
