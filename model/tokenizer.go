package model

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/tokenizer"
)

// LoadTokenizer builds the tokenizer described by a GGUF file's
// tokenizer.* metadata.
func LoadTokenizer(f *gguf.File) (*tokenizer.Tokenizer, error) {
	v := tokenizer.Vocab{BOS: -1, EOS: -1, UNK: -1, PAD: -1, EOT: -1, EOM: -1}
	var errs []error
	must := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	v.Model, err = f.String("tokenizer.ggml.model")
	must(err)
	v.Pre, err = f.StringOr("tokenizer.ggml.pre", "default")
	must(err)
	v.Tokens, err = f.Strings("tokenizer.ggml.tokens")
	must(err)
	if f.HasKey("tokenizer.ggml.scores") {
		v.Scores, err = f.Float32s("tokenizer.ggml.scores")
		must(err)
	}
	if f.HasKey("tokenizer.ggml.token_type") {
		v.Types, err = f.Int32s("tokenizer.ggml.token_type")
		must(err)
	}
	if f.HasKey("tokenizer.ggml.merges") {
		v.Merges, err = f.Strings("tokenizer.ggml.merges")
		must(err)
	}
	id := func(key string, dst *int32) {
		if !f.HasKey(key) {
			return
		}
		x, err := f.Int(key)
		must(err)
		if x < -1 || x > math.MaxInt32 {
			// int32(x) would wrap to another token (2^32+2 read as 2).
			must(fmt.Errorf("%w: %s %d is not a token id", ErrInvalidModel, key, x))
			return
		}
		*dst = int32(x)
	}
	id("tokenizer.ggml.bos_token_id", &v.BOS)
	id("tokenizer.ggml.eos_token_id", &v.EOS)
	id("tokenizer.ggml.unknown_token_id", &v.UNK)
	id("tokenizer.ggml.padding_token_id", &v.PAD)
	id("tokenizer.ggml.eot_token_id", &v.EOT)
	id("tokenizer.ggml.eom_token_id", &v.EOM)
	flag := func(key string, def bool) bool {
		if !f.HasKey(key) {
			return def
		}
		b, err := f.Bool(key)
		must(err)
		return b
	}
	v.AddBOS = flag("tokenizer.ggml.add_bos_token", tokenizer.DefaultAddBOS(v.Model, v.Pre))
	v.AddEOS = flag("tokenizer.ggml.add_eos_token", false)
	v.AddSpacePrefix = flag("tokenizer.ggml.add_space_prefix", v.Model == "llama")
	v.ChatTemplate, err = f.StringOr("tokenizer.chat_template", "")
	must(err)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if v.EOT < 0 {
		// As llama.cpp does, recognise a chat format's end-of-turn token by
		// its text when the file does not name it.
		for i, s := range v.Tokens {
			switch s {
			case "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>":
				v.EOT = int32(i)
			}
		}
	}
	t, err := tokenizer.New(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	if v.ChatTemplate != "" {
		if err := t.CheckChatTemplate(chatTemplateBudget); err != nil {
			return nil, fmt.Errorf("%w: %s: tokenizer.chat_template: %w", ErrInvalidModel, f.Path, err)
		}
	}
	return t, nil
}

// chatTemplateBudget is how long LoadTokenizer lets the file's chat
// template render a short conversation (a real template takes well under a
// millisecond; a var so tests can shorten it).
var chatTemplateBudget = 5 * time.Second

// CheckTokenizer checks that tok, f's tokenizer, fits w, f's weights: token
// ids index the embedding, so the vocabulary must have one row per token
// (llama.cpp requires the same).
func CheckTokenizer(f *gguf.File, w *Weights, tok *tokenizer.Tokenizer) error {
	if n := tok.VocabSize(); n != w.Vocab {
		return fmt.Errorf("%w: %s: tokenizer.ggml.tokens has %d tokens but token_embd.weight has %d rows", ErrInvalidModel, f.Path, n, w.Vocab)
	}
	return nil
}
