package synth

import (
	"fmt"
	"strings"

	"github.com/conclave-ai/conclave/model/gguf"
)

// The synthesized tokenizer is SentencePiece-style ("llama"): <unk>, <s>,
// </s>, the 256 byte-fallback tokens, then pieces. Pieces are the space mark
// ▁, single characters, ▁-prefixed characters, common English words with all
// their prefixes (so greedy merging can reach them), then letter n-grams until
// the vocabulary is full. Earlier pieces score higher.
const (
	unkID, bosID, eosID = 0, 1, 2
	minVocab            = 3 + 256 + 1
)

// MixtralTemplate is the chat template of Mixtral-8x7B-Instruct.
const MixtralTemplate = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"

const words = `the of and to in is that it for on was with as be by at this are from or an
have not but what all were when we there can your which their said if do will each about how
up out them then she many some so these would other into has more her two like him see time
could no make than first been its who now people my made over did down only way find use may
water long little very after words called just where most know get through back much go good
new write our me man too any day same right look think also around another came come work three
word must because does part even place well such here take why help put different away again
off went old number great tell men say small every found still between name should home big
give air line set own under read last never us left end along while might next sound below saw
something thought both few those always looks show large often together asked house world going
want school important until form food keep children feet land side without boy once animals life
enough took sometimes four head above kind began almost live page got earth need far hand high
year mother light parts country father let night following picture being study second eyes soon
times story boys since white days ever paper hard near sentence better best across during today
others however sure means knew try told young miles sun ways thing whole hear example heard
several change answer room sea against top turned learn point city play toward five using himself
usually model expert cluster token router node memory session inference hello`

func pieces() []string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	chars := letters + strings.ToUpper(letters) + "0123456789.,!?'\"-:;()[]/"
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	add("▁")
	for _, c := range chars {
		add(string(c))
	}
	for _, c := range chars {
		add("▁" + string(c))
	}
	for _, w := range strings.Fields(words) {
		for i := 2; i <= len(w); i++ {
			add("▁" + w[:i])
		}
	}
	add("▁[INST]")
	add("▁[/INST]")
	for _, w := range []string{"[INST]", "[/INST]", "[I", "[IN", "[INS", "▁[", "▁[I", "▁[IN", "▁[INS", "▁[/", "▁[/I", "▁[/IN", "▁[/INS", "[/", "[/I", "[/IN", "[/INS"} {
		add(w)
	}
	for _, a := range letters {
		for _, b := range letters {
			add(string(a) + string(b))
		}
	}
	for _, a := range letters {
		for _, b := range letters {
			add("▁" + string(a) + string(b))
		}
	}
	for _, a := range letters {
		for _, b := range letters {
			for _, c := range letters {
				add(string(a) + string(b) + string(c))
			}
		}
	}
	return out
}

// tokenizerKVs returns the tokenizer metadata for a vocabulary of n tokens.
func tokenizerKVs(n int) []gguf.KV {
	tokens := make([]string, 0, n)
	scores := make([]float32, 0, n)
	types := make([]int32, 0, n)
	push := func(tok string, score float32, typ int32) {
		tokens = append(tokens, tok)
		scores = append(scores, score)
		types = append(types, typ)
	}
	push("<unk>", 0, 2)
	push("<s>", 0, 3)
	push("</s>", 0, 3)
	for b := 0; b < 256; b++ {
		push(fmt.Sprintf("<0x%02X>", b), 0, 6)
	}
	ps := pieces()
	for i := 0; len(tokens) < n; i++ {
		if i < len(ps) {
			push(ps[i], -float32(i), 1)
			continue
		}
		// Past the generated pieces (vocabularies beyond ~20k): unused
		// placeholders that the tokenizer never produces.
		push(fmt.Sprintf("<unused%d>", i-len(ps)), -1e9, 5)
	}
	return []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "llama"},
		{Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.scores", Value: scores},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(bosID)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(eosID)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(unkID)},
		{Key: "tokenizer.ggml.add_bos_token", Value: true},
		{Key: "tokenizer.ggml.add_eos_token", Value: false},
		{Key: "tokenizer.chat_template", Value: MixtralTemplate},
	}
}
