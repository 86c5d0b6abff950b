package api

import (
	"strings"
	"unicode/utf8"
)

// textStream turns a stream of token bytes into text that is safe to send:
// it never emits part of a multi-byte UTF-8 character, and it holds back any
// tail that could be the start of a stop string, so a stop string is never
// sent and the text before it always is. It is pure and not safe for
// concurrent use.
//
// Bytes that can never become valid UTF-8 (a stray continuation byte, a
// byte token the model emits out of sequence) are emitted as U+FFFD rather
// than held forever.
type textStream struct {
	stops   []string
	maxStop int    // longest stop string in bytes
	pending []byte // bytes received and not yet emitted
	stopped bool
	// released counts the token bytes whose text was emitted: text and
	// bytes differ in length where invalid bytes became U+FFFD.
	released int
}

func newTextStream(stops []string) *textStream {
	t := &textStream{stops: stops}
	for _, s := range stops {
		t.maxStop = max(t.maxStop, len(s))
	}
	return t
}

// push appends one token's bytes and returns the text that can be emitted
// now. stopped reports that a stop string completed: text is everything
// before it, and the stream accepts nothing more.
func (t *textStream) push(b []byte) (text string, stopped bool) {
	if t.stopped {
		return "", true
	}
	t.pending = append(t.pending, b...)
	if len(t.stops) > 0 {
		if i := t.firstStop(); i >= 0 {
			text = validText(t.pending[:i])
			t.released += i
			t.pending = t.pending[:0]
			t.stopped = true
			return text, true
		}
	}
	cut := len(t.pending) - t.holdBack()
	cut = completeUTF8(t.pending[:cut])
	if cut == 0 {
		return "", false
	}
	text = validText(t.pending[:cut])
	t.released += cut
	t.pending = t.pending[:copy(t.pending, t.pending[cut:])]
	return text, false
}

// flush returns whatever is still held back, at the end of a generation
// that did not stop on a stop string.
func (t *textStream) flush() string {
	if t.stopped || len(t.pending) == 0 {
		return ""
	}
	text := validText(t.pending)
	t.released += len(t.pending)
	t.pending = t.pending[:0]
	return text
}

// firstStop returns the byte offset in pending of the earliest stop-string
// occurrence, -1 if none. Everything before pending was checked to hold no
// stop-string prefix, so no occurrence can start before it.
func (t *textStream) firstStop() int {
	best := -1
	for _, s := range t.stops {
		if i := strings.Index(string(t.pending), s); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

// holdBack returns the length of the longest tail of pending that is a
// proper prefix of some stop string.
func (t *textStream) holdBack() int {
	for k := min(len(t.pending), t.maxStop-1); k > 0; k-- {
		tail := t.pending[len(t.pending)-k:]
		for _, s := range t.stops {
			if len(s) > k && s[:k] == string(tail) {
				return k
			}
		}
	}
	return 0
}

// completeUTF8 returns the length of the longest prefix of b that does not
// end inside an incomplete (but still possibly valid) UTF-8 sequence.
func completeUTF8(b []byte) int {
	n := len(b)
	// Look back at most UTFMax-1 bytes for the start of the last character.
	for i := n - 1; i >= 0 && i >= n-utf8.UTFMax+1; i-- {
		c := b[i]
		if c < utf8.RuneSelf {
			return n // ASCII: complete
		}
		if utf8.RuneStart(c) {
			if utf8.FullRune(b[i:]) {
				return n
			}
			return i // a lead byte still waiting for continuation bytes
		}
	}
	return n // only continuation bytes: invalid whatever follows
}

// validText returns b as a string with each byte that is not part of a
// valid UTF-8 sequence replaced by U+FFFD, one replacement per byte (as
// ranging over a string does), so the result does not depend on where a
// stream was cut.
func validText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			sb.WriteString("\uFFFD")
		} else {
			sb.Write(b[:n])
		}
		b = b[n:]
	}
	return sb.String()
}
