package tokenizer

import (
	"strings"
	"testing"
)

// benchText is about 4 KB of English prose.
var benchText = func() string {
	const para = "The quick brown fox jumps over the lazy dog. It's 2024, and models with 12345 parameters don't " +
		"fit anywhere; they're sharded across machines, each holding a few experts.\n\nMixture-of-experts layers " +
		"route every token to two of eight feed-forward networks, so only a quarter of the weights are read per step. "
	var sb strings.Builder
	for sb.Len() < 4096 {
		sb.WriteString(para)
	}
	return sb.String()[:4096]
}()

// benchWords are the whitespace-led words of benchText, so the vocabs hold
// realistic multi-character tokens built through long merge chains.
func benchWords() []string {
	var ws []string
	seen := map[string]bool{}
	for _, w := range strings.Fields(benchText) {
		for _, v := range []string{w, " " + w} {
			if !seen[v] {
				seen[v] = true
				ws = append(ws, v)
			}
		}
	}
	return ws
}

func BenchmarkEncode(b *testing.B) {
	ws := benchWords()
	kinds := []struct {
		name string
		tk   *Tokenizer
	}{
		{"spm", newSPM().words(ws...).build(b)},
		{"bpe-gpt2", newBPE("gpt2").words(ws...).build(b)},
		{"bpe-llama3", newBPE("llama3").words(ws...).build(b)},
		{"bpe-qwen2", newBPE("qwen2").words(ws...).build(b)},
	}
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) {
			b.SetBytes(int64(len(benchText)))
			b.ReportAllocs()
			for b.Loop() {
				k.tk.Encode(benchText, true, true)
			}
		})
	}
}
