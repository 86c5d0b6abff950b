package model_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
)

// TestEOGByText: Qwen2.5-Instruct and Llama-3.1-Instruct GGUFs name only
// the turn end as eos_token_id; generation also ends at <|endoftext|>,
// <|end_of_text|> and <|eom_id|>, found by their text as llama.cpp finds
// them, and at nothing else.
func TestEOGByText(t *testing.T) {
	cases := []struct {
		name   string
		tokens []string
		eos    uint32
		want   []string
	}{
		{"qwen2.5-instruct", []string{"a", "b", "<|endoftext|>", "<|im_start|>", "<|im_end|>"}, 4, []string{"<|endoftext|>", "<|im_end|>"}},
		{"llama-3.1-instruct", []string{"a", "b", "<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"}, 5, []string{"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"}},
	}
	for _, c := range cases {
		types := make([]int32, len(c.tokens))
		for i := range types {
			types[i] = 1 // normal
			if i >= 2 {
				types[i] = 3 // control
			}
		}
		w := gguf.NewWriter(3)
		w.AddKV("tokenizer.ggml.model", "gpt2")
		w.AddKV("tokenizer.ggml.pre", "qwen2")
		w.AddKV("tokenizer.ggml.tokens", c.tokens)
		w.AddKV("tokenizer.ggml.token_type", types)
		w.AddKV("tokenizer.ggml.merges", []string{})
		w.AddKV("tokenizer.ggml.eos_token_id", c.eos)
		path := filepath.Join(t.TempDir(), "v.gguf")
		if err := w.WriteFile(path); err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := model.LoadTokenizer(f)
		if err != nil {
			t.Fatal(err)
		}
		for id, s := range c.tokens {
			if want := slices.Contains(c.want, s); tok.IsEOG(int32(id)) != want {
				t.Errorf("%s: IsEOG(%s) = %v, want %v", c.name, s, !want, want)
			}
		}
	}
}
