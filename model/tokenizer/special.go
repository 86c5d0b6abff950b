package tokenizer

import "strings"

// fragment is text[start:end] still to tokenize (id < 0) or a matched
// special token id.
type fragment struct {
	start, end int
	id         int32
}

// partition splits text around special tokens as llama.cpp's
// tokenizer_st_partition: for each special token, longest text first, every
// occurrence in every still-raw fragment is cut out, left to right. Control
// and unknown tokens take part only when parseSpecial is set. The result is
// valid until the session's next use.
func (t *Tokenizer) partition(s *session, text string, parseSpecial bool) []fragment {
	frags := s.frags[:0]
	if text == "" {
		return frags
	}
	frags = append(frags, fragment{0, len(text), -1})
	next := s.frags2[:0]
	for _, id := range t.specials {
		if !parseSpecial && t.types[id] != TypeUserDefined {
			continue
		}
		tok := t.v.Tokens[id]
		if len(tok) > len(text) || !strings.Contains(text, tok) {
			continue
		}
		next = next[:0]
		for _, f := range frags {
			if f.id >= 0 {
				next = append(next, f)
				continue
			}
			for f.start < f.end {
				i := strings.Index(text[f.start:f.end], tok)
				if i < 0 {
					break
				}
				if i > 0 {
					next = append(next, fragment{f.start, f.start + i, -1})
				}
				next = append(next, fragment{f.start + i, f.start + i + len(tok), id})
				f.start += i + len(tok)
			}
			if f.start < f.end {
				next = append(next, f)
			}
		}
		frags, next = next, frags
	}
	s.frags, s.frags2 = frags, next
	return frags
}
