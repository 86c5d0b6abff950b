package tokenizer

import "unicode/utf8"

// spaceEscape is U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space.
const spaceEscape = "\u2581"

// symbolLen is the length of the UTF-8 character starting buf, or 1 for an
// invalid byte. llama.cpp (unicode_len_utf8) trusts the lead byte alone, so
// an invalid lead byte there swallows the next bytes, even part of an
// escaped space; splitting invalid bytes one by one instead gives the same
// pieces for valid UTF-8 and lets every byte string round-trip.
func symbolLen(buf []byte) int32 {
	if buf[0] < utf8.RuneSelf {
		return 1
	}
	_, n := utf8.DecodeRune(buf)
	return int32(n)
}

// encodeSPM appends the tokens of one raw-text fragment, as llama.cpp's
// llm_tokenizer_spm_session: spaces become U+2581 (with one prepended when
// prefix is set), the text splits into UTF-8 characters, and adjacent pieces
// merge greedily by the score of the merged token. Pieces that are not
// tokens fall back to one token per byte.
func (t *Tokenizer) encodeSPM(s *session, text string, prefix bool, out []int32) []int32 {
	buf := s.buf[:0]
	if prefix {
		buf = append(buf, spaceEscape...)
	}
	for i := 0; i < len(text); i++ {
		if text[i] == ' ' {
			buf = append(buf, spaceEscape...)
		} else {
			buf = append(buf, text[i])
		}
	}
	s.buf = buf

	syms := s.syms[:0]
	for off := int32(0); off < int32(len(buf)); {
		n := symbolLen(buf[off:])
		next := int32(len(syms)) + 1
		if off+n == int32(len(buf)) {
			next = -1
		}
		id, ok := t.ids[string(buf[off:off+n])]
		if !ok {
			id = -1
		}
		syms = append(syms, symbol{start: off, n: n, prev: int32(len(syms)) - 1, next: next, id: id})
		off += n
	}
	s.syms = syms
	if len(syms) == 0 {
		return out
	}

	mergeSymbols(buf, syms, &s.queue, t.spmScore)

	for i := int32(0); i != -1; i = syms[i].next {
		if id := syms[i].id; id >= 0 {
			out = append(out, id)
			continue
		}
		for _, b := range buf[syms[i].start : syms[i].start+syms[i].n] {
			if id := t.byteTokens[b]; id >= 0 {
				out = append(out, id)
			}
		}
	}
	return out
}

// spmScore: two adjacent pieces may merge when their concatenation is a
// token; the merge with the highest token score goes first.
func (t *Tokenizer) spmScore(buf []byte, a, b *symbol) (float32, int32, bool) {
	id, ok := t.ids[string(buf[a.start:a.start+a.n+b.n])] // a and b are adjacent
	if !ok {
		return 0, -1, false
	}
	return t.score(id), id, true
}
