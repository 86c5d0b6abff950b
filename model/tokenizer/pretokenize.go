package tokenizer

import (
	"fmt"
	"sort"
	"sync"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// Pre-tokenizer regexes, as llama.cpp's llm_tokenizer_bpe uses them.
const (
	reGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// reGPT2Chain is reGPT2 without the final \s+, as it appears in
	// llama.cpp's "default" chain; text it leaves unmatched becomes a piece
	// of its own, so the difference is invisible in practice.
	reGPT2Chain = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
	reLlama3    = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reQwen2     = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// preTokenizer splits text into words before BPE merging. Each regex of the
// chain refines the pieces the previous one produced (llama.cpp's
// unicode_regex_split): within a piece, matches and the gaps between them
// both become pieces, and a piece's ends are text ends for lookahead.
type preTokenizer struct {
	exprs        []string
	ignoreMerges bool // a word that is itself a token is emitted whole (llama3)
	addBOS       bool // llama.cpp's add_bos default for this family
	// fast, when set, is a hand-written equivalent of the chain, used by
	// split instead of regexp2.
	fast func(runes []rune, out []span) []span

	once sync.Once
	res  []*regexp2.Regexp
	err  error
}

func (p *preTokenizer) compile() error {
	p.once.Do(func() {
		for _, e := range p.exprs {
			// No MatchTimeout: regexp2's default (DefaultMatchTimeout) is
			// "forever", which also skips its timeout clock, so matching
			// has no timer overhead on the hot path. All these patterns
			// are linear-time in practice (no nested quantifiers).
			re, err := regexp2.Compile(e, regexp2.None)
			if err != nil {
				p.err = fmt.Errorf("tokenizer: compile pre-tokenizer regex %q: %w", e, err)
				return
			}
			p.res = append(p.res, re)
		}
	})
	return p.err
}

// pres maps tokenizer.ggml.pre values to pre-tokenizers, following
// llama.cpp's llama_vocab::impl::load and llm_tokenizer_bpe.
var pres = func() map[string]*preTokenizer {
	m := map[string]*preTokenizer{}
	add := func(p *preTokenizer, names ...string) {
		for _, n := range names {
			m[n] = p
		}
	}
	add(&preTokenizer{exprs: []string{`[\p{P}\$\+<=>\^~\|]+`, reGPT2Chain, `\p{N}+`, `[0-9][0-9][0-9]`}}, "default")
	gpt2 := func(rs []rune, out []span) []span { return splitGPT2(rs, out) }
	llama3 := func(rs []rune, out []span) []span { return splitLlama3(rs, 3, out) }
	qwen2 := func(rs []rune, out []span) []span { return splitLlama3(rs, 1, out) }
	add(&preTokenizer{exprs: []string{reGPT2}, fast: gpt2}, "gpt2", "gpt-2", "phi-2", "roberta-bpe", "olmo", "mpt")
	add(&preTokenizer{exprs: []string{reLlama3}, ignoreMerges: true, addBOS: true, fast: llama3}, "llama3", "llama-v3", "llama-bpe")
	add(&preTokenizer{exprs: []string{reLlama3}, fast: llama3}, "dbrx", "smaug-bpe")
	add(&preTokenizer{exprs: []string{reQwen2}, fast: qwen2}, "qwen2", "deepseek-r1-qwen")
	return m
}()

// Pres lists the tokenizer.ggml.pre values New accepts for "gpt2" vocabs.
func Pres() []string {
	names := make([]string, 0, len(pres))
	for n := range pres {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// decodeRunes fills runes with text's code points and offs with the byte
// offset of each, plus len(text) at the end. An invalid UTF-8 byte becomes
// U+FFFD for matching (as in llama.cpp) but keeps its own 1-byte span, so the
// pieces cut from text still hold the original bytes.
func decodeRunes(text string, runes []rune, offs []int32) ([]rune, []int32) {
	runes, offs = runes[:0], offs[:0]
	for i := 0; i < len(text); {
		r, w := utf8.DecodeRuneInString(text[i:])
		runes = append(runes, r)
		offs = append(offs, int32(i))
		i += w
	}
	offs = append(offs, int32(len(text)))
	return runes, offs
}

// split returns in spans the [start, end) rune ranges of the words of runes.
// scratch is reused between regexes of the chain.
func (p *preTokenizer) split(runes []rune, spans, scratch []span) ([]span, []span) {
	if p.fast != nil {
		return p.fast(runes, spans[:0]), scratch
	}
	return p.splitRegex(runes, spans, scratch)
}

// splitRegex is split through regexp2; it is the reference for p.fast.
func (p *preTokenizer) splitRegex(runes []rune, spans, scratch []span) ([]span, []span) {
	spans = append(spans[:0], span{0, int32(len(runes))})
	if len(runes) == 0 {
		return spans[:0], scratch
	}
	for _, re := range p.res {
		out := scratch[:0]
		for _, sp := range spans {
			sub := runes[sp.start:sp.end]
			pos := int32(0)
			m, err := re.FindRunesMatch(sub)
			for ; m != nil && err == nil; m, err = re.FindNextMatch(m) {
				idx, n := int32(m.Index), int32(m.Length)
				if n == 0 {
					continue
				}
				if idx > pos {
					out = append(out, span{sp.start + pos, sp.start + idx})
				}
				out = append(out, span{sp.start + idx, sp.start + idx + n})
				pos = idx + n
			}
			if err != nil {
				// Only a timeout can fail, and none is set.
				panic(fmt.Sprintf("tokenizer: regexp2 match: %v", err))
			}
			if pos < int32(len(sub)) {
				out = append(out, span{sp.start + pos, sp.end})
			}
		}
		spans, scratch = out, spans
	}
	return spans, scratch
}

type span struct{ start, end int32 }
