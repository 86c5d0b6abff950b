package api

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/conclave-ai/conclave/model/tokenizer"
)

// Prompt building.
//
// A chat request is rendered with the model's chat template and the text is
// encoded with special-token parsing on, because the template's own markers
// ([INST], <|im_start|>, …) must become their special ids. That alone is what
// llama.cpp's server does, and it lets a user write "<|im_start|>system" in a
// message and have it read as a real turn marker. Conclave does not allow
// that: message content is always encoded as plain text.
//
// To keep llama.cpp's exact token ids in the common case, a message whose
// content holds no special-token text takes the render-then-encode path
// unchanged. When some content does hold special-token text, the template is
// rendered with each content replaced by a unique sentinel, the rendered
// text is split at the sentinels, and the template pieces are encoded with
// special parsing while the contents are encoded without it. A template that
// transforms content (so the sentinels do not come back exactly once each,
// in order) gets the request rejected rather than risk an injection.
//
// /v1/completions is the raw endpoint: its prompt is the whole model input,
// so it is encoded with special parsing on (and BOS added as the vocab
// says), as llama.cpp does.

// chatPrompt renders msgs and encodes them for generation.
func chatPrompt(tok *tokenizer.Tokenizer, msgs []tokenizer.Message) ([]int32, *Error) {
	rendered, err := tok.ApplyChatTemplate(msgs, true)
	if err != nil {
		return nil, templateError(err)
	}
	if !slices.ContainsFunc(msgs, func(m tokenizer.Message) bool { return hasSpecialText(tok, m.Content) }) {
		return tok.Encode(rendered, false, true), nil
	}
	return chatPromptGuarded(tok, msgs)
}

// hasSpecialText reports whether encoding s with special parsing yields a
// control or unknown token, which only special-token matching produces
// (user-defined tokens are matched with or without special parsing, so they
// are ordinary text here). An UNK from plain encoding is a harmless false
// positive: it only sends the request down the guarded path.
func hasSpecialText(tok *tokenizer.Tokenizer, s string) bool {
	if s == "" {
		return false
	}
	for _, id := range tok.Encode(s, false, true) {
		if t := tok.Type(id); t == tokenizer.TypeControl || t == tokenizer.TypeUnknown {
			return true
		}
	}
	return false
}

const (
	sentinelPrefix = "\x1bCONCLAVE-CONTENT-"
	sentinelFmt    = sentinelPrefix + "%d\x1b"
)

func chatPromptGuarded(tok *tokenizer.Tokenizer, msgs []tokenizer.Message) ([]int32, *Error) {
	// Folded before masking: the fold depends on which contents are empty,
	// and no sentinel is.
	msgs = tok.FoldSystem(msgs)
	masked := make([]tokenizer.Message, len(msgs))
	for i, m := range msgs {
		masked[i] = tokenizer.Message{Role: m.Role, Content: fmt.Sprintf(sentinelFmt, i)}
	}
	rendered, err := tok.ApplyChatTemplate(masked, true)
	if err != nil {
		return nil, templateError(err)
	}
	// One encoding over the template's pieces and the contents between
	// them: encoded piece by piece, each would start a fresh text (an SPM
	// vocab's space prefix at every seam).
	// Each sentinel must come back exactly once, in order: found in order
	// below, and (one linear count, not one per message) no more of them
	// than messages.
	if strings.Count(rendered, sentinelPrefix) != len(msgs) {
		return nil, badRequestCode("messages", "special_tokens_in_content",
			"a message holds special-token text and the chat template does not pass content through verbatim")
	}
	segs := make([]tokenizer.Segment, 0, 2*len(msgs)+1)
	rest := rendered
	for i, m := range msgs {
		s := fmt.Sprintf(sentinelFmt, i)
		j := strings.Index(rest, s)
		if j < 0 {
			return nil, badRequestCode("messages", "special_tokens_in_content",
				"message %d holds special-token text and the chat template does not pass content through verbatim", i)
		}
		segs = append(segs, tokenizer.Segment{Text: rest[:j], Special: true}, tokenizer.Segment{Text: m.Content})
		rest = rest[j+len(s):]
	}
	return tok.EncodeSegments(append(segs, tokenizer.Segment{Text: rest, Special: true}), false), nil
}

func templateError(err error) *Error {
	if errors.Is(err, tokenizer.ErrTemplateException) {
		// The template itself rejected the conversation (roles out of
		// order, a role it does not know): the client's fault.
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return badRequest("messages", "the model's chat template rejected the messages: %s", msg)
	}
	// Any other rendering failure comes from what the messages contain
	// meeting the template (a type the template cannot handle, say): a bad
	// request, not a server fault.
	return badRequest("messages", "the model's chat template could not render the messages: %v", err)
}
