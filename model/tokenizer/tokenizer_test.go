package tokenizer

import (
	"errors"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/quick"
)

func TestSPMEncode(t *testing.T) {
	mergeVocab := func(ab, bc float32) *Tokenizer {
		b := newSPM()
		b.v.AddSpacePrefix = false
		for _, p := range []string{"a", "b", "c"} {
			b.add(p, 0, TypeNormal)
		}
		b.add("ab", ab, TypeNormal)
		b.add("bc", bc, TypeNormal)
		return b.build(t)
	}
	hello := newSPM().words(" Hello", " world", "Hi", " Hi")
	hello.add("[INST]", 0, TypeControl)
	hello.add("[A]", 0, TypeControl)
	hello.add("[A][B]", 0, TypeControl)
	hello.add("<tool>", 0, TypeUserDefined)
	helloTk := hello.build(t)
	noPrefix := newSPM().words("Hi")
	noPrefix.v.AddSpacePrefix = false
	noBytes := Vocab{Model: ModelSPM, Tokens: []string{"<unk>", "a"}, BOS: -1, EOS: -1, UNK: 0, PAD: -1, EOT: -1, EOM: -1}
	noBytesTk, err := New(noBytes)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name                     string
		tk                       *Tokenizer
		text                     string
		addSpecial, parseSpecial bool
		want                     []string
	}{
		{"higher score merges first", mergeVocab(-5, -1), "abc", false, false, []string{"a", "bc"}},
		{"other order", mergeVocab(-1, -5), "abc", false, false, []string{"ab", "c"}},
		{"tie goes leftmost", mergeVocab(-2, -2), "abc", false, false, []string{"ab", "c"}},
		{"byte fallback", mergeVocab(0, 0), "aé", false, false, []string{"a", "<0xC3>", "<0xA9>"}},
		{"invalid utf8 bytes", mergeVocab(0, 0), "a\xff\xc3", false, false, []string{"a", "<0xFF>", "<0xC3>"}},
		{"space prefix", helloTk, "Hello world", false, false, []string{"▁Hello", "▁world"}},
		{"bos", helloTk, "Hello world", true, false, []string{"<s>", "▁Hello", "▁world"}},
		{"empty", helloTk, "", false, false, []string{}},
		{"empty with bos", helloTk, "", true, false, []string{"<s>"}},
		{"special parsed, prefix after it", helloTk, "[INST]Hi", false, true, []string{"[INST]", "▁Hi"}},
		{"special as text", helloTk, "[INST]Hi", false, false, []string{"▁", "<0x5B>", "<0x49>", "<0x4E>", "<0x53>", "<0x54>", "<0x5D>", "Hi"}},
		{"longest special first", helloTk, "[A][B][A]", false, true, []string{"[A][B]", "[A]"}},
		{"user-defined always matched", helloTk, "Hi<tool>Hi", false, false, []string{"▁Hi", "<tool>", "▁Hi"}},
		{"no prefix", noPrefix.build(t), "Hi Hi", false, false, []string{"Hi", "▁", "Hi"}},
		{"unknown byte without byte tokens", noBytesTk, "a\x01", false, false, []string{"a", "<unk>"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pieces(tc.tk, tc.tk.Encode(tc.text, tc.addSpecial, tc.parseSpecial))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Encode(%q) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestBPEEncode(t *testing.T) {
	words := []string{" 12345", "Hello", " world", "'s", " ", "123", "45"}
	tests := []struct {
		name string
		tk   *Tokenizer
		text string
		want []string
	}{
		{"lower rank merges first", newBPE("gpt2").merge("b", "c").merge("a", "b").build(t), "abc", []string{"a", "bc"}},
		{"other order", newBPE("gpt2").merge("a", "b").merge("b", "c").build(t), "abc", []string{"ab", "c"}},
		{"gpt2", newBPE("gpt2").words(words...).build(t), "Hello world's 12345", []string{"Hello", "Ġworld", "'s", "Ġ12345"}},
		{"llama3 digits in threes", newBPE("llama3").words(words...).build(t), "Hello world's 12345", []string{"Hello", "Ġworld", "'s", "Ġ", "123", "45"}},
		{"qwen2 single digits", newBPE("qwen2").words(words...).build(t), "Hello world's 12345", []string{"Hello", "Ġworld", "'s", "Ġ", "1", "2", "3", "4", "5"}},
		{"default chain", newBPE("default").words(words...).build(t), "Hello world's 12345", []string{"Hello", "Ġworld", "'", "s", "Ġ", "123", "45"}},
		{"empty", newBPE("gpt2").build(t), "", []string{}},
		{"bytes", newBPE("gpt2").build(t), "a\n\xff", []string{"a", "Ċ", "ÿ"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pieces(tc.tk, tc.tk.Encode(tc.text, false, false))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Encode(%q) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}

	t.Run("llama3 ignores merges for whole-word tokens", func(t *testing.T) {
		for pre, want := range map[string][]string{"llama3": {"Hello"}, "gpt2": {"H", "e", "l", "l", "o"}} {
			b := newBPE(pre)
			b.add("Hello", TypeNormal)
			tk := b.build(t)
			if got := pieces(tk, tk.Encode("Hello", false, false)); !reflect.DeepEqual(got, want) {
				t.Errorf("%s: got %q, want %q", pre, got, want)
			}
		}
	})

	t.Run("special tokens", func(t *testing.T) {
		b := newBPE("qwen2").words("user", "\n", "hi")
		b.add("<|im_start|>", TypeControl)
		b.add("<|im_end|>", TypeControl)
		b.v.BOS, b.v.EOS, b.v.AddBOS = -1, b.add("<|endoftext|>", TypeControl), false
		tk := b.build(t)
		got := pieces(tk, tk.Encode("<|im_start|>user\nhi<|im_end|>", true, true))
		want := []string{"<|im_start|>", "user", "Ċ", "hi", "<|im_end|>"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
		if d := tk.Decode(tk.Encode("<|im_start|>user\nhi<|im_end|>", false, true)); d != "user\nhi" {
			t.Errorf("Decode renders control tokens: %q", d)
		}
	})
}

func TestPreTokenizerSplit(t *testing.T) {
	tests := []struct {
		pre, text string
		want      []string
	}{
		{"gpt2", "Hello world's 12345", []string{"Hello", " world", "'s", " 12345"}},
		{"gpt2", "a  b\n\n", []string{"a", " ", " b", "\n\n"}},
		{"llama3", "I'M here 1234567!!\n\n  x", []string{"I", "'M", " here", " ", "123", "456", "7", "!!\n\n", " ", " x"}},
		{"llama3", "a\u00a0\u3000b", []string{"a", "\u00a0", "\u3000b"}},
		{"llama3", "x  \n\n y", []string{"x", "  \n\n", " y"}},
		{"qwen2", "v12 ok", []string{"v", "1", "2", " ok"}},
		{"llama3", "日本語テキスト", []string{"日本語テキスト"}},
		{"llama3", "a\xffb", []string{"a", "\xffb"}},
	}
	for _, tc := range tests {
		t.Run(tc.pre+"/"+tc.text, func(t *testing.T) {
			p := pres[tc.pre]
			if err := p.compile(); err != nil {
				t.Fatal(err)
			}
			runes, offs := decodeRunes(tc.text, nil, nil)
			spans, _ := p.split(runes, nil, nil)
			got := []string{}
			for _, sp := range spans {
				got = append(got, tc.text[offs[sp.start]:offs[sp.end]])
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("split(%q) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	b := newSPM().words(" Hello", "Hi")
	b.add("<tool>", 0, TypeUserDefined)
	tk := b.build(t)
	ids := tk.Encode("Hello <tool>é\n", true, true)
	if got, want := tk.Decode(ids), " Hello <tool> é\n"; got != want {
		t.Errorf("Decode = %q, want %q (pieces %q)", got, want, pieces(tk, ids))
	}
	var streamed []byte
	for _, id := range ids {
		streamed = append(streamed, tk.TokenBytes(id)...)
	}
	if string(streamed) != tk.Decode(ids) {
		t.Errorf("TokenBytes concatenation %q != Decode", streamed)
	}
	if tk.TokenBytes(-1) != nil || tk.TokenBytes(int32(tk.VocabSize())) != nil || tk.Piece(-5) != "" {
		t.Error("out-of-range ids should give nil/empty")
	}
	if id, _ := tk.TokenID("<0x0A>"); string(tk.TokenBytes(id)) != "\n" || tk.Piece(id) != "<0x0A>" {
		t.Error("byte token rendering")
	}
	if tk.Decode([]int32{tk.BOS(), tk.EOS(), 0}) != "" {
		t.Error("control/unknown tokens should decode empty")
	}
}

func TestIsEOG(t *testing.T) {
	b := newBPE("gpt2")
	b.v.EOS = b.add("<|endoftext|>", TypeControl)
	b.v.EOT = b.add("<|eot_id|>", TypeControl)
	other := b.add("<|other|>", TypeControl)
	tk := b.build(t)
	if !tk.IsEOG(b.v.EOS) || !tk.IsEOG(b.v.EOT) || tk.IsEOG(other) || tk.IsEOG(-1) {
		t.Error("IsEOG wrong")
	}
	if tk.EOS() != b.v.EOS || tk.BOS() != -1 || tk.VocabSize() != len(b.v.Tokens) {
		t.Error("accessors wrong")
	}
}

func TestNewErrors(t *testing.T) {
	ok := func() Vocab { return newBPE("gpt2").merge("a", "b").v }
	tests := []struct {
		name   string
		mutate func(*Vocab)
		want   error
	}{
		{"no tokens", func(v *Vocab) { v.Tokens = nil; v.Types = nil }, ErrInvalidVocab},
		{"model", func(v *Vocab) { v.Model = "bert" }, ErrUnsupportedModel},
		{"pre", func(v *Vocab) { v.Pre = "klingon" }, ErrUnsupportedPre},
		{"types length", func(v *Vocab) { v.Types = v.Types[:3] }, ErrInvalidVocab},
		{"scores length", func(v *Vocab) { v.Scores = []float32{1} }, ErrInvalidVocab},
		{"eos range", func(v *Vocab) { v.EOS = int32(len(v.Tokens)) }, ErrInvalidVocab},
		{"bos negative", func(v *Vocab) { v.BOS = -2 }, ErrInvalidVocab},
		{"add bos without bos", func(v *Vocab) { v.AddBOS = true }, ErrInvalidVocab},
		{"bad merge", func(v *Vocab) { v.Merges = append(v.Merges, "abc") }, ErrInvalidVocab},
		{"merges in spm", func(v *Vocab) { v.Model = ModelSPM }, ErrInvalidVocab},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := ok()
			tc.mutate(&v)
			_, err := New(v)
			if !errors.Is(err, tc.want) {
				t.Fatalf("New: %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
	if _, err := New(Vocab{Model: ModelBPE, Pre: "klingon", Tokens: []string{"a"}, BOS: -1, EOS: -1, UNK: -1, PAD: -1, EOT: -1, EOM: -1}); err == nil || !strings.Contains(err.Error(), "klingon") {
		t.Errorf("unknown pre error should name it: %v", err)
	}
	if _, err := New(ok()); err != nil {
		t.Fatal(err)
	}
}

// roundTripVocabs are complete vocabs with enough merges to exercise them.
func roundTripVocabs(t testing.TB) (spm, noPrefix, bpe, llama3 *Tokenizer) {
	words := []string{" the", " and", "ing", " of", " a", "  ", "\n\n", " é", "é", "日本"}
	s := newSPM().words(words...)
	spm = s.build(t)
	s.v.AddSpacePrefix = false
	noPrefix = s.build(t)
	bpe = newBPE("gpt2").words(words...).build(t)
	llama3 = newBPE("llama3").words(words...).build(t)
	return
}

func checkRoundTrip(t testing.TB, spm, noPrefix, bpe, llama3 *Tokenizer, s string) bool {
	t.Helper()
	ok := true
	for _, tk := range []*Tokenizer{bpe, llama3} {
		if got := tk.Decode(tk.Encode(s, false, false)); got != s {
			t.Errorf("%s: Decode(Encode(%q)) = %q", tk.v.Pre, s, got)
			ok = false
		}
	}
	want := strings.ReplaceAll(s, "▁", " ")
	if got := noPrefix.Decode(noPrefix.Encode(s, false, false)); got != want {
		t.Errorf("spm without prefix: Decode(Encode(%q)) = %q", s, got)
		ok = false
	}
	if s != "" {
		want = " " + want
	}
	if got := spm.Decode(spm.Encode(s, false, false)); got != want {
		t.Errorf("spm: Decode(Encode(%q)) = %q, want %q", s, got, want)
		ok = false
	}
	return ok
}

func TestRoundTrip(t *testing.T) {
	spm, noPrefix, bpe, llama3 := roundTripVocabs(t)
	for _, s := range []string{"", " ", "the and of", "\xff\xfe", "é\xc3", "▁x", "日本語 the\n\n\tand  ", "\x00\x80\xc3\xa9\xe2\x96"} {
		checkRoundTrip(t, spm, noPrefix, bpe, llama3, s)
	}
	f := func(b []byte) bool { return checkRoundTrip(t, spm, noPrefix, bpe, llama3, string(b)) }
	if err := quick.Check(f, &quick.Config{MaxCount: 2000}); err != nil {
		t.Error(err)
	}
	// Mostly-text inputs hit merges more often than uniform bytes.
	alphabet := []string{" ", "the", "and", "a", "é", "\n", "日", "本", "\xff", "1", "'s", "!"}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		var sb strings.Builder
		for j := rng.Intn(20); j > 0; j-- {
			sb.WriteString(alphabet[rng.Intn(len(alphabet))])
		}
		checkRoundTrip(t, spm, noPrefix, bpe, llama3, sb.String())
	}
}

func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", "Hello world", "\xff", "the and\n\n", "日本"} {
		f.Add([]byte(s))
	}
	spm, noPrefix, bpe, llama3 := roundTripVocabs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkRoundTrip(t, spm, noPrefix, bpe, llama3, string(b))
	})
}

// TestMergeMatchesNaive checks the heap-based merge against a quadratic
// reference on random inputs.
func TestMergeMatchesNaive(t *testing.T) {
	words := []string{"ab", "bc", "abc", "bca", "cab", "aa", "aab", "ba"}
	rng := rand.New(rand.NewSource(2))
	s := newSPM()
	s.v.AddSpacePrefix = false
	for _, c := range []string{"a", "b", "c"} {
		s.add(c, 0, TypeNormal)
	}
	for _, w := range words {
		s.add(w, float32(rng.Intn(4)), TypeNormal) // ties on purpose
	}
	spm := s.build(t)
	b := newBPE("gpt2")
	for _, i := range rng.Perm(len(words)) {
		for k := 1; k < len(words[i]); k++ {
			b.merge(words[i][:k], words[i][k:])
		}
	}
	bpe := b.build(t)

	for i := 0; i < 3000; i++ {
		raw := make([]byte, rng.Intn(16))
		for j := range raw {
			raw[j] = "abc"[rng.Intn(3)]
		}
		text := string(raw)
		chars := func() []string {
			out := make([]string, len(text))
			for j := range text {
				out[j] = text[j : j+1]
			}
			return out
		}
		wantSPM := naiveMerge(chars(), func(a, c string) (float64, bool) {
			id, ok := spm.ids[a+c]
			return float64(spm.score(id)), ok
		})
		if got := pieces(spm, spm.Encode(text, false, false)); !reflect.DeepEqual(got, wantSPM) && len(text) > 0 {
			t.Fatalf("spm %q: got %q, want %q", text, got, wantSPM)
		}
		wantBPE := naiveMerge(chars(), func(a, c string) (float64, bool) {
			r, ok := bpe.ranks[a+" "+c]
			return -float64(r), ok
		})
		if got := pieces(bpe, bpe.Encode(text, false, false)); !reflect.DeepEqual(got, wantBPE) && len(text) > 0 {
			t.Fatalf("bpe %q: got %q, want %q", text, got, wantBPE)
		}
	}
}

func TestDefaultAddBOS(t *testing.T) {
	if !DefaultAddBOS("llama", "") || !DefaultAddBOS("gpt2", "llama-bpe") || DefaultAddBOS("gpt2", "qwen2") {
		t.Error("DefaultAddBOS")
	}
	if len(Pres()) == 0 {
		t.Error("Pres empty")
	}
}

func TestEncodeConcurrent(t *testing.T) {
	spm, _, bpe, _ := roundTripVocabs(t)
	for _, tk := range []*Tokenizer{spm, bpe} {
		want := tk.Encode(benchText, true, true)
		errs := make(chan string, 8)
		for g := 0; g < 8; g++ {
			go func() {
				for i := 0; i < 20; i++ {
					if got := tk.Encode(benchText, true, true); !reflect.DeepEqual(got, want) {
						errs <- "concurrent Encode differs"
						return
					}
				}
				errs <- ""
			}()
		}
		for g := 0; g < 8; g++ {
			if e := <-errs; e != "" {
				t.Error(e)
			}
		}
	}
}
