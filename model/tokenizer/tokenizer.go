package tokenizer

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ardanlabs/jinja"
)

// Tokenizer converts between text and token ids for one vocab. It is
// immutable after New and safe for concurrent use.
type Tokenizer struct {
	v      Vocab
	spm    bool
	types  []TokenType // per id; TypeNormal when the vocab has no types
	ids    map[string]int32
	pieces [][]byte // per id: what Decode emits (empty for control etc.)

	byteTokens [256]int32 // SPM byte fallback: <0xAB>, else the 1-byte token, else UNK, else -1

	pre          *preTokenizer    // BPE only
	ranks        map[string]int32 // BPE only: "a b" -> merge rank
	pairRanks    map[uint64]merge // BPE only: the merges of two tokens, by pairKey
	byteLevelIDs [256]int32       // BPE only: token of each byte's byte-level character, -1 if none

	// specials are the ids matched in raw text before tokenizing: control,
	// user-defined and unknown tokens, longest text first.
	specials []int32

	eog []int32 // the ids that end generation (IsEOG)

	sessions sync.Pool // *session

	tmplOnce sync.Once
	tmpl     *jinja.Template
	sysOnce  sync.Once
	sysRole  bool // the template renders a system message (SupportsSystemRole)
	tmplErr  error
}

// session holds the scratch buffers of one Encode call.
type session struct {
	t      *Tokenizer
	frags  []fragment
	frags2 []fragment
	buf    []byte
	key    []byte
	syms   []symbol
	queue  bigramQueue
	runes  []rune
	offs   []int32
	spans  []span
	spans2 []span
}

// New validates v and builds the lookup tables. It keeps v's slices; the
// caller must not modify them afterwards. Errors wrap ErrInvalidVocab,
// ErrUnsupportedModel or ErrUnsupportedPre.
func New(v Vocab) (*Tokenizer, error) {
	if err := v.validate(); err != nil {
		return nil, err
	}
	n := len(v.Tokens)
	t := &Tokenizer{
		v:      v,
		spm:    v.Model == ModelSPM,
		types:  make([]TokenType, n),
		ids:    make(map[string]int32, n),
		pieces: make([][]byte, n),
	}
	t.sessions.New = func() any { return &session{t: t} }
	for _, id := range []int32{v.EOS, v.EOT, v.EOM} {
		if id >= 0 && !slices.Contains(t.eog, id) {
			t.eog = append(t.eog, id)
		}
	}
	for id, text := range v.Tokens {
		if eogTexts[text] && !slices.Contains(t.eog, int32(id)) {
			t.eog = append(t.eog, int32(id))
		}
		t.types[id] = TypeNormal
		if len(v.Types) != 0 {
			t.types[id] = TokenType(v.Types[id])
		}
		// Later duplicates win, as in llama.cpp's token_to_id; empty texts
		// can never match.
		if text != "" {
			t.ids[text] = int32(id)
		}
	}
	for id := range v.Tokens {
		t.pieces[id] = t.renderPiece(int32(id))
		switch t.types[id] {
		case TypeControl, TypeUserDefined, TypeUnknown:
			if v.Tokens[id] != "" {
				t.specials = append(t.specials, int32(id))
			}
		}
	}
	sort.SliceStable(t.specials, func(i, j int) bool {
		return len(v.Tokens[t.specials[i]]) > len(v.Tokens[t.specials[j]])
	})

	if t.spm {
		for b := range t.byteTokens {
			id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]
			if !ok {
				id, ok = t.ids[string([]byte{byte(b)})]
			}
			if !ok {
				id = v.UNK
			}
			t.byteTokens[b] = id
		}
		return t, nil
	}

	t.pre = pres[v.preName()]
	if err := t.pre.compile(); err != nil {
		return nil, err
	}
	t.ranks = make(map[string]int32, len(v.Merges))
	t.pairRanks = make(map[uint64]merge, len(v.Merges))
	for i, m := range v.Merges {
		if _, dup := t.ranks[m]; dup { // first rank wins, as in llama.cpp
			continue
		}
		t.ranks[m] = int32(i)
		l, r, _ := splitMerge(m)
		lid, lok := t.ids[l]
		rid, rok := t.ids[r]
		if lok && rok {
			id, ok := t.ids[l+r]
			if !ok {
				id = -1
			}
			t.pairRanks[pairKey(lid, rid)] = merge{rank: int32(i), id: id}
		}
	}
	for b := range t.byteLevelIDs {
		id, ok := t.ids[byteToUTF8[b]]
		if !ok {
			id = -1
		}
		t.byteLevelIDs[b] = id
	}
	return t, nil
}

// renderPiece is llama.cpp's token_to_piece with special=false: control,
// unknown, unused and undefined tokens render empty; user-defined tokens
// render their text verbatim; normal tokens are unescaped (SPM: U+2581 to
// space; BPE: byte-level characters to bytes); SPM byte tokens are the byte.
func (t *Tokenizer) renderPiece(id int32) []byte {
	text := t.v.Tokens[id]
	switch t.types[id] {
	case TypeUserDefined:
		return []byte(text)
	case TypeNormal:
		if t.spm {
			return []byte(strings.ReplaceAll(text, spaceEscape, " "))
		}
		return decodeByteLevel(text)
	case TypeByte:
		if t.spm {
			if len(text) == 6 && strings.HasPrefix(text, "<0x") && text[5] == '>' {
				if b, err := strconv.ParseUint(text[3:5], 16, 8); err == nil {
					return []byte{byte(b)}
				}
			}
			return []byte(text)
		}
	}
	return nil
}

func (t *Tokenizer) score(id int32) float32 {
	if len(t.v.Scores) == 0 {
		return 0
	}
	return t.v.Scores[id]
}

// Encode tokenizes text as llama.cpp's llama_tokenize does.
//
// addSpecial prepends BOS when the vocab's AddBOS is set and appends EOS when
// AddEOS is set. parseSpecial makes the text of control and unknown tokens
// (such as "<s>", "[INST]", "<|im_start|>") become those tokens; user-defined
// tokens are matched in either case, as in llama.cpp (and Hugging Face
// tokenizers' added tokens). Matching takes the longest token texts first
// across the whole text, then shorter ones in the remaining gaps.
//
// SPM only: when AddSpacePrefix is set, a space is prepended to every text
// fragment that starts the text or follows a matched special token (llama.cpp
// does the latter too, so "[INST]hi" encodes "hi" as " hi").
//
// For valid UTF-8 the result equals llama.cpp's. Invalid UTF-8 is kept byte
// for byte so that every byte string round-trips (see Decode), which is
// where this package deliberately differs: llama.cpp's BPE path replaces
// each invalid byte with U+FFFD (word boundaries are the same either way),
// and its SPM path lets an invalid lead byte swallow the bytes after it into
// one character, while here each invalid byte is a character of its own.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) []int32 {
	s := t.sessions.Get().(*session)
	defer t.sessions.Put(s)

	return t.encodeFrags(s, text, t.partition(s, text, parseSpecial), addSpecial)
}

// Segment is a piece of the text EncodeSegments encodes.
type Segment struct {
	Text string
	// Special parses the text of control and unknown tokens in this piece
	// as those tokens (Encode's parseSpecial); otherwise it is plain text.
	Special bool
}

// EncodeSegments encodes the concatenation of segs as Encode would, except
// that special-token text is parsed only inside the Special pieces: a chat
// template's markers become their tokens while the messages between them
// stay plain text. Plain text runs on across the pieces' boundaries, so
// when no plain piece holds special-token text the result is exactly
// Encode(concatenation, addSpecial, true), the SPM space prefix included.
func (t *Tokenizer) EncodeSegments(segs []Segment, addSpecial bool) []int32 {
	var b strings.Builder
	for _, sg := range segs {
		b.WriteString(sg.Text)
	}
	text := b.String()
	s := t.sessions.Get().(*session)
	defer t.sessions.Put(s)
	var frags []fragment
	off := 0
	for _, sg := range segs {
		for _, f := range t.partition(s, sg.Text, sg.Special) {
			f.start, f.end = f.start+off, f.end+off
			if last := len(frags) - 1; f.id < 0 && last >= 0 && frags[last].id < 0 && frags[last].end == f.start {
				frags[last].end = f.end
				continue
			}
			frags = append(frags, f)
		}
		off += len(sg.Text)
	}
	return t.encodeFrags(s, text, frags, addSpecial)
}

// encodeFrags encodes text partitioned into frags (special tokens and raw
// runs).
func (t *Tokenizer) encodeFrags(s *session, text string, frags []fragment, addSpecial bool) []int32 {
	out := make([]int32, 0, len(text)/4+4)
	if addSpecial && t.v.AddBOS {
		out = append(out, t.v.BOS)
	}
	prevSpecial := true // start of text counts as "after a special token"
	for _, f := range frags {
		if f.id >= 0 {
			out = append(out, f.id)
			prevSpecial = true
			continue
		}
		raw := text[f.start:f.end]
		if t.spm {
			out = t.encodeSPM(s, raw, t.v.AddSpacePrefix && prevSpecial, out)
		} else {
			out = t.encodeBPE(s, raw, out)
		}
		prevSpecial = false
	}
	if addSpecial && t.v.AddEOS {
		out = append(out, t.v.EOS)
	}
	return out
}

// Decode concatenates TokenBytes of ids; ids out of range are skipped. The
// result is a raw byte string and may hold invalid UTF-8 when ids ends mid
// character.
//
// Decode does not strip the space that Encode prepends for SPM vocabs with
// AddSpacePrefix (llama_detokenize can; callers wanting that trim one leading
// " "). So for an SPM vocab holding all 256 <0xAB> byte tokens and "▁",
// Decode(Encode(s, false, false)) == p + strings.ReplaceAll(s, "▁", " ") where
// p is " " if AddSpacePrefix and s != "" (and no user-defined tokens occur in
// s), else "". For a BPE vocab holding all 256 byte-level characters,
// Decode(Encode(s, false, false)) == s for every byte string s.
func (t *Tokenizer) Decode(ids []int32) string {
	n := 0
	for _, id := range ids {
		n += len(t.TokenBytes(id))
	}
	var b strings.Builder
	b.Grow(n)
	for _, id := range ids {
		b.Write(t.TokenBytes(id))
	}
	return b.String()
}

// TokenBytes returns the bytes id contributes to decoded text (see Decode):
// empty for control tokens, the byte for SPM byte tokens, spaces for "▁".
// Concatenating TokenBytes over a stream gives Decode's result, so a
// streaming caller appends them and emits text up to the last complete UTF-8
// character. The slice is shared: callers must not modify it. Out-of-range
// ids give nil.
func (t *Tokenizer) TokenBytes(id int32) []byte {
	if id < 0 || int(id) >= len(t.pieces) {
		return nil
	}
	p := t.pieces[id]
	return p[:len(p):len(p)]
}

// Piece returns id's text exactly as stored in the vocab ("▁Hello",
// "<0x0A>", "<|im_start|>", "Ġworld"), or "" when id is out of range.
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.v.Tokens) {
		return ""
	}
	return t.v.Tokens[id]
}

// Type returns id's token type, TypeUndefined when out of range.
func (t *Tokenizer) Type(id int32) TokenType {
	if id < 0 || int(id) >= len(t.types) {
		return TypeUndefined
	}
	return t.types[id]
}

// TokenID returns the id whose vocab text is exactly text.
func (t *Tokenizer) TokenID(text string) (int32, bool) {
	id, ok := t.ids[text]
	return id, ok
}

// BOS returns the beginning-of-sequence id, -1 if the vocab has none.
func (t *Tokenizer) BOS() int32 { return t.v.BOS }

// EOS returns the end-of-sequence id, -1 if the vocab has none.
func (t *Tokenizer) EOS() int32 { return t.v.EOS }

// VocabSize returns the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.v.Tokens) }

// IsEOG reports whether id ends generation: the vocab's EOS, EOT or EOM,
// or a token whose text chat formats use to end a turn or a text (see
// eogTexts), as llama.cpp's end-of-generation set has them. A file names
// one EOS; an instruct model may still end with another of these
// (Llama 3.1 with <|eom_id|> or <|end_of_text|>, Qwen2.5 with
// <|endoftext|>), which renders as no text and must stop generation.
func (t *Tokenizer) IsEOG(id int32) bool {
	return id >= 0 && slices.Contains(t.eog, id)
}

// eogTexts are the token texts that end generation whatever the vocab's
// ids say (llama.cpp's list).
var eogTexts = map[string]bool{
	"<|eot_id|>": true, "<|im_end|>": true, "<|end|>": true, "<|return|>": true, "<|call|>": true,
	"<end_of_turn>": true, "<|endoftext|>": true, "<|eom_id|>": true, "<EOT>": true, "_<EOT>": true,
	"<|end_of_text|>": true, "<end_of_utterance>": true,
}
