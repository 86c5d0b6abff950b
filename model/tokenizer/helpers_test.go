package tokenizer

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// spmVocab builds a "llama" vocab: <unk>, <s>, </s>, the 256 byte tokens,
// "▁", then the given normal pieces with their scores, then the given
// control and user-defined pieces.
type spmBuilder struct {
	v Vocab
}

func newSPM() *spmBuilder {
	b := &spmBuilder{v: Vocab{Model: ModelSPM, BOS: 1, EOS: 2, UNK: 0, PAD: -1, EOT: -1, EOM: -1, AddBOS: true, AddSpacePrefix: true}}
	b.add("<unk>", 0, TypeUnknown)
	b.add("<s>", 0, TypeControl)
	b.add("</s>", 0, TypeControl)
	for i := 0; i < 256; i++ {
		b.add(fmt.Sprintf("<0x%02X>", i), 0, TypeByte)
	}
	b.add("▁", -1000, TypeNormal)
	return b
}

func (b *spmBuilder) add(text string, score float32, typ TokenType) int32 {
	b.v.Tokens = append(b.v.Tokens, text)
	b.v.Scores = append(b.v.Scores, score)
	b.v.Types = append(b.v.Types, int32(typ))
	return int32(len(b.v.Tokens) - 1)
}

// words adds every prefix of each word (with spaces escaped) as a normal
// token scored by its length, so greedy merging can build the whole word.
func (b *spmBuilder) words(ws ...string) *spmBuilder {
	have := map[string]bool{}
	for _, t := range b.v.Tokens {
		have[t] = true
	}
	for _, w := range ws {
		w = strings.ReplaceAll(w, " ", "▁")
		for i := range w {
			p := w[:i+utf8.RuneLen([]rune(w[i:])[0])]
			if !have[p] {
				have[p] = true
				b.add(p, float32(len(p)), TypeNormal)
			}
		}
	}
	return b
}

func (b *spmBuilder) build(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := New(b.v)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// bpeBuilder builds a "gpt2" vocab: the 256 byte-level characters, then
// merged tokens.
type bpeBuilder struct {
	v    Vocab
	have map[string]bool
	merg map[string]bool
}

func newBPE(pre string) *bpeBuilder {
	b := &bpeBuilder{v: Vocab{Model: ModelBPE, Pre: pre, BOS: -1, EOS: -1, UNK: -1, PAD: -1, EOT: -1, EOM: -1}, have: map[string]bool{}, merg: map[string]bool{}}
	for i := 0; i < 256; i++ {
		b.add(string(byteToRune[i]), TypeNormal)
	}
	return b
}

func (b *bpeBuilder) add(text string, typ TokenType) int32 {
	b.have[text] = true
	b.v.Tokens = append(b.v.Tokens, text)
	b.v.Types = append(b.v.Types, int32(typ))
	return int32(len(b.v.Tokens) - 1)
}

// byteLevel maps raw text to byte-level characters.
func byteLevel(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		sb.WriteString(byteToUTF8[s[i]])
	}
	return sb.String()
}

// merge adds the merge "a b" (raw text, mapped to byte level) and its result.
func (b *bpeBuilder) merge(a, c string) *bpeBuilder {
	a, c = byteLevel(a), byteLevel(c)
	m := a + " " + c
	if !b.merg[m] {
		b.merg[m] = true
		b.v.Merges = append(b.v.Merges, m)
	}
	if !b.have[a+c] {
		b.add(a+c, TypeNormal)
	}
	return b
}

// words adds merges that build each word left to right, one byte at a time.
func (b *bpeBuilder) words(ws ...string) *bpeBuilder {
	for _, w := range ws {
		for i := 1; i < len(w); i++ {
			b.merge(w[:i], w[i:i+1])
		}
	}
	return b
}

func (b *bpeBuilder) build(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := New(b.v)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// pieces renders ids as their vocab texts, for readable failures.
func pieces(tk *Tokenizer, ids []int32) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = tk.Piece(id)
	}
	return out
}

// naiveMerge is a quadratic reference for mergeSymbols: repeatedly merge
// the best adjacent pair (highest key, leftmost) until none may merge.
func naiveMerge(pieces []string, score func(a, b string) (float64, bool)) []string {
	for {
		best, bestKey := -1, 0.0
		for i := 0; i+1 < len(pieces); i++ {
			if k, ok := score(pieces[i], pieces[i+1]); ok && (best < 0 || k > bestKey) {
				best, bestKey = i, k
			}
		}
		if best < 0 {
			return pieces
		}
		pieces[best] += pieces[best+1]
		pieces = append(pieces[:best+1], pieces[best+2:]...)
	}
}
