package api

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTextStream(t *testing.T) {
	cases := []struct {
		name    string
		stops   []string
		chunks  []string
		want    []string // text released after each chunk
		flush   string
		stopped bool
	}{
		{"plain", nil, []string{"ab", "c"}, []string{"ab", "c"}, "", false},
		{"split rune", nil, []string{"a\xe2", "\x82", "\xac!"}, []string{"a", "", "€!"}, "", false},
		{"4-byte rune", nil, []string{"\xf0\x9f", "\x98", "\x80"}, []string{"", "", "😀"}, "", false},
		{"invalid byte passes", nil, []string{"a\xff", "b"}, []string{"a\uFFFD", "b"}, "", false},
		{"stray continuation", nil, []string{"\x80\x80"}, []string{"\uFFFD\uFFFD"}, "", false},
		{"truncated at end", nil, []string{"x\xe2\x82"}, []string{"x"}, "\uFFFD\uFFFD", false},
		{"stop in one chunk", []string{"END"}, []string{"helloEND more"}, []string{"hello"}, "", true},
		{"stop across chunks", []string{"END"}, []string{"hello E", "N", "D!"}, []string{"hello ", "", ""}, "", true},
		{"prefix then mismatch", []string{"END"}, []string{"hello EN", "x"}, []string{"hello ", "ENx"}, "", false},
		{"held prefix flushed", []string{"END"}, []string{"abcEN"}, []string{"abc"}, "EN", false},
		{"earliest stop wins", []string{"cd", "b"}, []string{"abcd"}, []string{"a"}, "", true},
		{"overlapping prefixes", []string{"aab"}, []string{"aa", "aab"}, []string{"", "aa"}, "", true},
		{"unicode stop", []string{"€"}, []string{"x\xe2\x82", "\xacy"}, []string{"x", ""}, "", true},
		{"stop at start", []string{"\n\n"}, []string{"\n", "\nrest"}, []string{"", ""}, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := newTextStream(c.stops)
			stopped := false
			for i, ch := range c.chunks {
				got, st := ts.push([]byte(ch))
				if got != c.want[i] {
					t.Fatalf("chunk %d %q: got %q, want %q", i, ch, got, c.want[i])
				}
				if !utf8.ValidString(got) {
					t.Fatalf("chunk %d: invalid UTF-8 %q", i, got)
				}
				stopped = stopped || st
			}
			if stopped != c.stopped {
				t.Fatalf("stopped %v, want %v", stopped, c.stopped)
			}
			if got := ts.flush(); got != c.flush {
				t.Fatalf("flush %q, want %q", got, c.flush)
			}
		})
	}
}

// The released text never depends on how the bytes were chunked, and
// always equals the text up to the first stop string.
func FuzzTextStream(f *testing.F) {
	f.Add([]byte("hello END world"), "END", uint8(3))
	f.Add([]byte("a\xe2\x82\xacb\xff"), "€", uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, stop string, step uint8) {
		if stop == "" || step == 0 {
			return
		}
		ts := newTextStream([]string{stop})
		var got strings.Builder
		stopped := false
		for i := 0; i < len(data) && !stopped; i += int(step) {
			text, st := ts.push(data[i:min(len(data), i+int(step))])
			if !utf8.ValidString(text) {
				t.Fatalf("invalid UTF-8 released: %q", text)
			}
			got.WriteString(text)
			stopped = st
		}
		got.WriteString(ts.flush())
		want := data
		if i := strings.Index(string(data), stop); i >= 0 {
			want = data[:i]
		}
		if !stopped && strings.Contains(string(data), stop) {
			t.Fatalf("stop %q in %q not detected", stop, data)
		}
		if got.String() != validText(want) {
			t.Fatalf("step %d: got %q, want %q", step, got.String(), validText(want))
		}
	})
}
