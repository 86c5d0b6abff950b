package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// Request bodies. Fields are pointers where absence differs from the zero
// value. Unknown fields are ignored (clients send many we do not use); a
// known field of the wrong type is a 400 naming the field.

// genParams are the fields chat and text completions share.
type genParams struct {
	Model            string             `json:"model"`
	MaxTokens        *int               `json:"max_tokens"`
	Temperature      *float64           `json:"temperature"`
	TopP             *float64           `json:"top_p"`
	N                *int               `json:"n"`
	BestOf           *int               `json:"best_of"`
	Stream           *bool              `json:"stream"`
	StreamOptions    *streamOptions     `json:"stream_options"`
	Stop             stopList           `json:"stop"`
	Seed             *int64             `json:"seed"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	LogitBias        map[string]float64 `json:"logit_bias"`
	User             string             `json:"user"`

	// Extensions: top_k, min_p and ignore_eos as vLLM and llama.cpp spell
	// them; repetition_penalty is vLLM's (the whole prompt and output),
	// repeat_penalty with repeat_last_n llama.cpp's (a window).
	SessionID         string   `json:"session_id"` // also the X-Session-ID header
	TopK              *int     `json:"top_k"`
	MinP              *float64 `json:"min_p"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`
	RepeatPenalty     *float64 `json:"repeat_penalty"`
	RepeatLastN       *int     `json:"repeat_last_n"`
	IgnoreEOS         bool     `json:"ignore_eos"`

	// Resume continues a stream another home began; only on forwarded
	// requests (see resumeField).
	Resume *resumeRequest `json:"conclave_resume"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// chatRequest is POST /v1/chat/completions.
type chatRequest struct {
	genParams
	Messages            []chatMessage   `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ResponseFormat      *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

type chatMessage struct {
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
	Name    string         `json:"name"`
}

// messageList is "messages" decoded one message at a time, so that an error
// names the message: messages[2].content, not messages. A request that
// fails to decode is decoded again this way (chatJob): message by message
// costs a parse per message, which only a failed request pays.
type messageList []chatMessage

func (l *messageList) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*l = nil
		return nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		return &fieldError{"messages", "must be an array of messages"}
	}
	out := make(messageList, len(raws))
	for i, raw := range raws {
		at := fmt.Sprintf("messages[%d]", i)
		if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
			return &fieldError{at, "must be an object with a role and content"}
		}
		err := json.Unmarshal(raw, &out[i]) // keys renamed with the body's
		var (
			fe  *fieldError
			typ *json.UnmarshalTypeError
		)
		switch {
		case err == nil:
		case errors.As(err, &fe):
			return &fieldError{at + "." + fe.param, fe.msg}
		case errors.As(err, &typ) && typ.Field != "":
			return &fieldError{at + "." + typ.Field, typeErrorText(typ)}
		default:
			return &fieldError{at, err.Error()}
		}
	}
	*l = out
	return nil
}

// completionRequest is POST /v1/completions.
type completionRequest struct {
	genParams
	Prompt   promptInput `json:"prompt"`
	Logprobs *int        `json:"logprobs"`
	Echo     bool        `json:"echo"`
	Suffix   *string     `json:"suffix"`
}

// embeddingRequest is POST /v1/embeddings.
type embeddingRequest struct {
	Model          string      `json:"model"`
	Input          promptInput `json:"input"`
	EncodingFormat string      `json:"encoding_format"`
	Dimensions     *int        `json:"dimensions"`
	User           string      `json:"user"`
}

// fieldError is returned by the custom decoders below so the 400 can name
// the field.
type fieldError struct {
	param, msg string
}

func (e *fieldError) Error() string { return e.param + ": " + e.msg }

// stopList is "stop": a string, an array of strings, or null.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	switch b = bytes.TrimSpace(b); {
	case string(b) == "null":
		*s = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return &fieldError{"stop", "must be a string or an array of strings"}
		}
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return &fieldError{"stop", "must be a string or an array of strings"}
	}
	*s = many
	return nil
}

// messageContent is a message's "content": a string, null, or an array of
// content parts of which only {"type":"text","text":…} is supported (the
// texts are concatenated).
type messageContent struct {
	Text string
	Set  bool // present and not null
}

func (c *messageContent) UnmarshalJSON(b []byte) error {
	switch b = bytes.TrimSpace(b); {
	case string(b) == "null":
		*c = messageContent{}
		return nil
	case len(b) > 0 && b[0] == '"':
		if err := json.Unmarshal(b, &c.Text); err != nil {
			return &fieldError{"content", "must be a string or an array of content parts"}
		}
		c.Set = true
		return nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		return &fieldError{"content", "must be a string or an array of content parts"}
	}
	var sb strings.Builder
	for i, raw := range raws {
		var p contentPart
		if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
			return &fieldError{"content", fmt.Sprintf("part %d must be an object {\"type\":\"text\",\"text\":\"…\"}", i)}
		}
		if err := json.Unmarshal(dropMiscased(raw, contentPartType), &p); err != nil {
			var typ *json.UnmarshalTypeError
			if errors.As(err, &typ) && typ.Field != "" {
				return &fieldError{"content", fmt.Sprintf("part %d: %s %s", i, typ.Field, typeErrorText(typ))}
			}
			return &fieldError{"content", fmt.Sprintf("part %d must be an object {\"type\":\"text\",\"text\":\"…\"}", i)}
		}
		switch {
		case p.Type == "":
			return &fieldError{"content", fmt.Sprintf("part %d has no type", i)}
		case p.Type != "text":
			return &fieldError{"content", fmt.Sprintf("part %d: type %q is not supported (only \"text\")", i, clip(p.Type, 48))}
		case p.Text == nil:
			return &fieldError{"content", fmt.Sprintf("part %d (type \"text\") has no text string", i)}
		}
		sb.WriteString(*p.Text)
	}
	*c = messageContent{Text: sb.String(), Set: true}
	return nil
}

// contentPart is one part of an array content.
type contentPart struct {
	Type string  `json:"type"`
	Text *string `json:"text"`
}

// promptInput is a completion "prompt" or an embedding "input": a string,
// an array of strings, an array of token ids, or an array of arrays of
// token ids. Exactly one of Texts and Tokens is set after decoding.
type promptInput struct {
	Texts  []string
	Tokens [][]int32
	Set    bool
}

func (p *promptInput) UnmarshalJSON(b []byte) error {
	const msg = "must be a string, an array of strings, an array of token ids or an array of arrays of token ids"
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*p = promptInput{}
		return nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		*p = promptInput{Texts: []string{one}, Set: true}
		return nil
	}
	var texts []string
	if json.Unmarshal(b, &texts) == nil {
		*p = promptInput{Texts: texts, Set: true}
		return nil
	}
	var ids []int32
	if json.Unmarshal(b, &ids) == nil {
		*p = promptInput{Tokens: [][]int32{ids}, Set: true}
		return nil
	}
	var nested [][]int32
	if json.Unmarshal(b, &nested) == nil {
		*p = promptInput{Tokens: nested, Set: true}
		return nil
	}
	// Integers, but one too large for a token id: say which.
	var wide []json.Number
	if json.Unmarshal(b, &wide) != nil {
		var wides [][]json.Number
		if json.Unmarshal(b, &wides) == nil {
			wide = slices.Concat(wides...)
		}
	}
	for _, v := range wide {
		if i, err := v.Int64(); err == nil && (i < math.MinInt32 || i > math.MaxInt32) {
			return &fieldError{"prompt", fmt.Sprintf("token id %s is out of range", clip(v.String(), 48))}
		}
	}
	return &fieldError{"prompt", msg}
}

func (p promptInput) count() int { return len(p.Texts) + len(p.Tokens) }

// decodeBody unmarshals a JSON request body into v, mapping every failure
// to a 400 that names the field when it can.
func decodeBody(body []byte, v any) *Error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("", "the request body is empty; send a JSON object")
	}
	if !utf8.Valid(body) {
		return badRequestCode("", "invalid_encoding", "the request body is not valid UTF-8")
	}
	err := json.Unmarshal(dropMiscased(body, reflect.TypeOf(v)), v)
	if err == nil {
		return nil
	}
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		fe  *fieldError
	)
	switch {
	case errors.As(err, &fe):
		return badRequest(fe.param, "%s", fe.Error())
	case errors.As(err, &syn):
		return badRequestCode("", "invalid_json", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequestCode("", "invalid_json", "the request body must be a JSON object, not %s", typ.Value)
		}
		field := strings.TrimPrefix(typ.Field, "genParams.")
		return badRequest(field, "%s %s", field, typeErrorText(typ))
	}
	return badRequestCode("", "invalid_json", "invalid JSON body: %v", err)
}

// clip shortens s to at most n bytes (on a rune boundary), marking the cut:
// an error echoes what the client sent, not a 5 KB number.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// typeErrorText says what is wrong with a value of the wrong type: "must be
// an integer, not string \"ten\"", or for a number that does not fit its
// field (a seed of 2⁶⁴, a temperature of 1e400), that it is out of range.
func typeErrorText(typ *json.UnmarshalTypeError) string {
	kind := typ.Type.Kind()
	if num, ok := strings.CutPrefix(typ.Value, "number "); ok {
		switch kind {
		case reflect.Int, reflect.Int32, reflect.Int64:
			if !strings.ContainsAny(num, ".eE") {
				return fmt.Sprintf("is out of range: %s does not fit in a %d-bit integer", clip(num, 48), typ.Type.Bits())
			}
		case reflect.Float32, reflect.Float64:
			return fmt.Sprintf("is out of range: %s is not a finite %d-bit number", clip(num, 48), typ.Type.Bits())
		}
	}
	return fmt.Sprintf("must be %s, not %s", jsonKind(kind.String()), clip(typ.Value, 48))
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int32", "int64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "of another type"
}

// finiteIn reports whether *p is absent or a finite number in [lo, hi].
func finiteIn(p *float64, lo, hi float64) bool {
	return p == nil || (!math.IsNaN(*p) && *p >= lo && *p <= hi)
}
