package tokenizer

import (
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// splitAlphabet mixes every character class the pre-tokenizer regexes care
// about: ASCII and other letters, digits and other numbers, apostrophes and
// contraction letters, spaces, line breaks, Unicode separators, marks,
// symbols and invalid UTF-8.
var splitAlphabet = []string{"a", "Z", "s", "S", "t", "r", "E", "v", "l", "L", "m", "d", "é", "日", "ß",
	"0", "7", "²", "Ⅻ", "'", "’", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u2028", "\u0085",
	"\u0301", "!", ".", "$", "+", "<", "|", "😀", "\xff", "\xc3", "\x00"}

func randomSplitText(rng *rand.Rand) string {
	var sb strings.Builder
	for j := rng.Intn(24); j > 0; j-- {
		sb.WriteString(splitAlphabet[rng.Intn(len(splitAlphabet))])
	}
	return sb.String()
}

func checkFastSplit(t *testing.T, text string) {
	runes, _ := decodeRunes(text, nil, nil)
	for _, name := range []string{"gpt2", "llama3", "qwen2"} {
		p := pres[name]
		if err := p.compile(); err != nil {
			t.Fatal(err)
		}
		fast := p.fast(runes, nil)
		slow, _ := p.splitRegex(runes, nil, nil)
		if len(fast) == 0 && len(slow) == 0 {
			continue
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%s %q: fast %v, regexp2 %v", name, text, fast, slow)
		}
	}
}

func TestFastSplitMatchesRegex(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for i := 0; i < 20000; i++ {
		checkFastSplit(t, randomSplitText(rng))
	}
	checkFastSplit(t, benchText)
}

func FuzzFastSplit(f *testing.F) {
	f.Add("Hello world's 12345\n\n  x")
	f.Add("I'LL  \r\n\t'Ve")
	f.Fuzz(func(t *testing.T, s string) { checkFastSplit(t, s) })
}
