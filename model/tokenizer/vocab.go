package tokenizer

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. New and ApplyChatTemplate wrap them with %w and a message
// naming the offending field, index or value; test them with errors.Is.
var (
	// ErrInvalidVocab: the metadata is inconsistent (length mismatch, id out
	// of range, unparsable merge, ...).
	ErrInvalidVocab = errors.New("tokenizer: invalid vocab")
	// ErrUnsupportedModel: tokenizer.ggml.model is neither "llama" nor "gpt2".
	ErrUnsupportedModel = errors.New("tokenizer: unsupported tokenizer model")
	// ErrUnsupportedPre: tokenizer.ggml.pre names a pre-tokenizer this package
	// does not implement.
	ErrUnsupportedPre = errors.New("tokenizer: unsupported pre-tokenizer")
	// ErrChatTemplate: the chat template failed to parse or render.
	ErrChatTemplate = errors.New("tokenizer: chat template")
	// ErrTemplateException: the template called raise_exception (for
	// example, roles that do not alternate). It is wrapped together with
	// ErrChatTemplate.
	ErrTemplateException = errors.New("tokenizer: chat template raised exception")
)

// TokenType is the GGUF tokenizer.ggml.token_type of a token (llama.cpp's
// llama_token_type).
type TokenType int32

// Token types as stored in GGUF.
const (
	TypeUndefined   TokenType = 0
	TypeNormal      TokenType = 1
	TypeUnknown     TokenType = 2
	TypeControl     TokenType = 3
	TypeUserDefined TokenType = 4
	TypeUnused      TokenType = 5
	TypeByte        TokenType = 6
)

// Model names accepted in Vocab.Model.
const (
	ModelSPM = "llama" // SentencePiece BPE with scores and byte fallback
	ModelBPE = "gpt2"  // byte-level BPE with ranked merges
)

// Vocab is the tokenizer part of a GGUF file's metadata, with GGUF key names
// in comments. The GGUF reader fills it; this package never reads files.
// Optional ids are -1 when the key is absent. Booleans carry the value after
// the reader applied llama.cpp's defaults for absent keys (see DefaultAddBOS).
type Vocab struct {
	Model  string    // tokenizer.ggml.model: "llama" (SPM) or "gpt2" (byte-level BPE)
	Pre    string    // tokenizer.ggml.pre (gpt2 only): "default" (also used when empty), "gpt2", "llama3"/"llama-bpe", "qwen2", ... see Pres
	Tokens []string  // tokenizer.ggml.tokens, indexed by token id
	Scores []float32 // tokenizer.ggml.scores (llama); empty means all 0
	Types  []int32   // tokenizer.ggml.token_type (TokenType values); empty means all normal
	Merges []string  // tokenizer.ggml.merges (gpt2): "a b" pairs, rank = index

	BOS, EOS, UNK, PAD int32 // tokenizer.ggml.{bos,eos,unknown,padding}_token_id; -1 if absent
	EOT, EOM           int32 // tokenizer.ggml.{eot,eom}_token_id; -1 if absent

	AddBOS, AddEOS bool   // tokenizer.ggml.add_bos_token / add_eos_token
	AddSpacePrefix bool   // tokenizer.ggml.add_space_prefix (llama; GGUF default true)
	ChatTemplate   string // tokenizer.chat_template; empty means DefaultChatTemplate
}

// DefaultAddBOS reports llama.cpp's add_bos_token default for a vocab whose
// GGUF file lacks the key: true for "llama" (SPM) and for the llama3 family of
// BPE pre-tokenizers, false otherwise. The GGUF reader should use it when the
// key is absent.
func DefaultAddBOS(model, pre string) bool {
	if model == ModelSPM {
		return true
	}
	if p, ok := pres[pre]; ok {
		return p.addBOS
	}
	return false
}

// validate checks v and returns the first inconsistency found.
func (v *Vocab) validate() error {
	n := len(v.Tokens)
	if n == 0 {
		return fmt.Errorf("%w: no tokens", ErrInvalidVocab)
	}
	if v.Model != ModelSPM && v.Model != ModelBPE {
		return fmt.Errorf("%w: %q (want %q or %q)", ErrUnsupportedModel, v.Model, ModelSPM, ModelBPE)
	}
	if len(v.Scores) != 0 && len(v.Scores) != n {
		return fmt.Errorf("%w: %d scores for %d tokens", ErrInvalidVocab, len(v.Scores), n)
	}
	if len(v.Types) != 0 && len(v.Types) != n {
		return fmt.Errorf("%w: %d token types for %d tokens", ErrInvalidVocab, len(v.Types), n)
	}
	for _, id := range []struct {
		name string
		id   int32
	}{{"bos", v.BOS}, {"eos", v.EOS}, {"unknown", v.UNK}, {"padding", v.PAD}, {"eot", v.EOT}, {"eom", v.EOM}} {
		if id.id < -1 || int(id.id) >= n {
			return fmt.Errorf("%w: %s_token_id %d out of range [-1, %d)", ErrInvalidVocab, id.name, id.id, n)
		}
	}
	if v.AddBOS && v.BOS < 0 {
		return fmt.Errorf("%w: add_bos_token set but no bos_token_id", ErrInvalidVocab)
	}
	if v.AddEOS && v.EOS < 0 {
		return fmt.Errorf("%w: add_eos_token set but no eos_token_id", ErrInvalidVocab)
	}
	if v.Model == ModelBPE {
		if _, ok := pres[v.preName()]; !ok {
			return fmt.Errorf("%w: %q", ErrUnsupportedPre, v.Pre)
		}
		for i, m := range v.Merges {
			if _, _, ok := splitMerge(m); !ok {
				return fmt.Errorf("%w: merge %d %q is not two space-separated parts", ErrInvalidVocab, i, m)
			}
		}
	} else if len(v.Merges) != 0 {
		return fmt.Errorf("%w: %d merges in a %q vocab", ErrInvalidVocab, len(v.Merges), v.Model)
	}
	return nil
}

// preName is Pre with llama.cpp's default for an absent key.
func (v *Vocab) preName() string {
	if v.Pre == "" {
		return "default"
	}
	return v.Pre
}

// splitMerge splits "a b" as llama.cpp does: at the first space after the
// first byte, so a left part may itself start with a space.
func splitMerge(m string) (left, right string, ok bool) {
	if len(m) < 3 {
		return "", "", false
	}
	i := strings.IndexByte(m[1:], ' ')
	if i < 0 {
		return "", "", false
	}
	left, right = m[:i+1], m[i+2:]
	return left, right, right != ""
}
