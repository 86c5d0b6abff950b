package tokenizer

import "unicode/utf8"

// GPT-2 byte-level mapping (bytes_to_unicode): printable bytes map to
// themselves, the other 68 bytes to U+0100.. in byte order, so every byte
// string becomes printable, space-free text.
var (
	byteToRune [256]rune
	runeToByte [0x144]int16 // -1 where no byte maps to the rune
	byteToUTF8 [256]string
)

func init() {
	for i := range runeToByte {
		runeToByte[i] = -1
	}
	n := rune(0)
	for b := 0; b < 256; b++ {
		r := rune(b)
		if !(b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE) {
			r = 256 + n
			n++
		}
		byteToRune[b] = r
		runeToByte[r] = int16(b)
		byteToUTF8[b] = string(r)
	}
}

// decodeByteLevel maps a BPE token's text back to bytes. Characters outside
// the mapping (only in malformed vocabs) are kept as their UTF-8.
func decodeByteLevel(text string) []byte {
	out := make([]byte, 0, len(text))
	for _, r := range text {
		if r >= 0 && int(r) < len(runeToByte) && runeToByte[r] >= 0 {
			out = append(out, byte(runeToByte[r]))
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return out
}

// encodeBPE appends the tokens of one raw-text fragment, as llama.cpp's
// llm_tokenizer_bpe_session: split into words by the pre-tokenizer, map each
// word's bytes to byte-level characters, merge adjacent pieces by lowest
// merge rank, and look the pieces up. A piece that is not a token is emitted
// as the single-byte tokens of its bytes that exist (llama.cpp does the
// same; a complete byte-level vocab never gets there).
func (t *Tokenizer) encodeBPE(s *session, text string, out []int32) []int32 {
	s.runes, s.offs = decodeRunes(text, s.runes, s.offs)
	s.spans, s.spans2 = t.pre.split(s.runes, s.spans, s.spans2)
	for _, sp := range s.spans {
		word := text[s.offs[sp.start]:s.offs[sp.end]]
		buf := s.buf[:0]
		syms := s.syms[:0]
		for i := 0; i < len(word); i++ {
			start := int32(len(buf))
			buf = append(buf, byteToUTF8[word[i]]...)
			syms = append(syms, symbol{start: start, n: int32(len(buf)) - start, prev: int32(i) - 1, next: int32(i) + 1, id: t.byteLevelIDs[word[i]]})
		}
		if len(syms) == 0 {
			continue
		}
		syms[len(syms)-1].next = -1
		s.buf, s.syms = buf, syms

		if t.pre.ignoreMerges {
			if id, ok := t.ids[string(buf)]; ok {
				out = append(out, id)
				continue
			}
		}
		mergeSymbols(buf, syms, &s.queue, s.bpeScore)
		for i := int32(0); i != -1; i = syms[i].next {
			if id := syms[i].id; id >= 0 {
				out = append(out, id)
				continue
			}
			piece := buf[syms[i].start : syms[i].start+syms[i].n]
			for j := range piece {
				if id, ok := t.ids[string(piece[j:j+1])]; ok {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

// bpeScore: two adjacent pieces may merge when "a b" is a merge; lower rank
// goes first. Pieces that are tokens are looked up by id pair; the string
// form is needed only for pieces outside the vocab (malformed vocabs).
func (s *session) bpeScore(buf []byte, a, b *symbol) (float32, int32, bool) {
	if a.id >= 0 && b.id >= 0 {
		m, ok := s.t.pairRanks[pairKey(a.id, b.id)]
		if !ok {
			return 0, -1, false
		}
		return -float32(m.rank), m.id, true
	}
	k := append(append(append(s.key[:0], buf[a.start:a.start+a.n]...), ' '), buf[b.start:b.start+b.n]...)
	s.key = k
	rank, ok := s.t.ranks[string(k)]
	if !ok {
		return 0, -1, false
	}
	id, ok := s.t.ids[string(k[:a.n])+string(k[a.n+1:])]
	if !ok {
		id = -1
	}
	return -float32(rank), id, true
}

// merge is a BPE merge of two tokens: its rank and the merged token (-1 if
// the merged text is not a token).
type merge struct{ rank, id int32 }

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }
