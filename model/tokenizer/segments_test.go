package tokenizer

import (
	"slices"
	"strings"
	"testing"
)

// TestEncodeSegments: special-token text is parsed only in Special pieces;
// plain text runs on across the seams, so without special text in plain
// pieces the ids are Encode's of the whole text (one SPM space prefix, BPE
// words split as in one text).
func TestEncodeSegments(t *testing.T) {
	b := newSPM().words(" Hello", " world", "Hi", " Hi", "lo")
	inst := b.add("[INST]", 0, TypeControl)
	spm := b.build(t)
	bpe := newBPE("llama3").words("Hello", " world").build(t)
	for _, tk := range []*Tokenizer{spm, bpe} {
		for _, segs := range [][]Segment{
			{{Text: "[INST] Hel", Special: true}, {Text: "lo world"}, {Text: " [INST]", Special: true}},
			{{Text: "Hello"}, {Text: " world"}},
			{{Text: "", Special: true}, {Text: "Hi"}, {Text: "", Special: true}},
		} {
			var whole strings.Builder
			for _, s := range segs {
				whole.WriteString(s.Text)
			}
			if got, want := tk.EncodeSegments(segs, true), tk.Encode(whole.String(), true, true); !slices.Equal(got, want) {
				t.Errorf("%+v: %q, want Encode's %q", segs, pieces(tk, got), pieces(tk, want))
			}
		}
	}
	// "[INST]" in a plain piece is text; in a special piece, the token.
	got := spm.EncodeSegments([]Segment{{Text: "[INST]", Special: true}, {Text: "Hi [INST]"}}, false)
	if n := strings.Count(strings.Join(pieces(spm, got), "|"), "[INST]"); n != 1 || got[0] != inst {
		t.Errorf("plain-piece [INST] parsed as the control token: %q", pieces(spm, got))
	}
	if want := slices.Concat([]int32{inst}, spm.Encode("Hi [INST]", false, false)); !slices.Equal(got, want) {
		t.Errorf("%q, want %q", pieces(spm, got), pieces(spm, want))
	}
}
