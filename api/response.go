package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/model/tokenizer"
)

// Response bodies, as OpenAI spells them.

type usage struct {
	PromptTokens        int           `json:"prompt_tokens"`
	CompletionTokens    int           `json:"completion_tokens"`
	TotalTokens         int           `json:"total_tokens"`
	PromptTokensDetails *promptDetail `json:"prompt_tokens_details,omitempty"`
}

type promptDetail struct {
	CachedTokens int `json:"cached_tokens"`
}

func (o *outcome) usage() *usage {
	return &usage{PromptTokens: o.prompt, CompletionTokens: o.generated, TotalTokens: o.prompt + o.generated,
		PromptTokensDetails: &promptDetail{CachedTokens: o.cached}}
}

type chatMessageOut struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// chatLogprobs is a choice's "logprobs" in chat format.
type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
}

type chatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float32          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// completionLogprobs is a choice's "logprobs" in the legacy completions
// format.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type choice struct {
	Index        int             `json:"index"`
	Message      *chatMessageOut `json:"message,omitempty"` // chat
	Delta        *chatDelta      `json:"delta,omitempty"`   // chat stream
	Text         *string         `json:"text,omitempty"`    // completions
	Logprobs     any             `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type completionResponse struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	SystemFingerprint string   `json:"system_fingerprint"`
	Choices           []choice `json:"choices"`
	// Usage is *usage, or nullJSON on the chunks before a stream's usage
	// chunk when the client asked for one (OpenAI sends "usage": null
	// there), or nil (absent).
	Usage any `json:"usage,omitempty"`
	// TokenIDs, only in chunks of a forwarded stream, must stay the last
	// field: the relay cuts it off (see tokenIDsField).
	TokenIDs []int32 `json:"conclave_token_ids,omitempty"`
}

const fingerprint = "conclave"

// nullJSON is an explicit JSON null.
var nullJSON = json.RawMessage("null")

func tokenBytesInts(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

func chatLogprobsOf(tok *tokenizer.Tokenizer, lps []tokenLogprob) *chatLogprobs {
	out := &chatLogprobs{Content: make([]chatTokenLogprob, 0, len(lps))}
	for _, lp := range lps {
		b := tok.TokenBytes(lp.token)
		c := chatTokenLogprob{Token: string(b), Logprob: lp.logprob, Bytes: tokenBytesInts(b), TopLogprobs: []chatTopLogprob{}}
		for _, t := range lp.top {
			tb := tok.TokenBytes(t.Token)
			c.TopLogprobs = append(c.TopLogprobs, chatTopLogprob{Token: string(tb), Logprob: t.Logprob, Bytes: tokenBytesInts(tb)})
		}
		out.Content = append(out.Content, c)
	}
	return out
}

// completionLogprobsOf builds the legacy format; off tracks the text
// offsets, from the start of the completion (vLLM's origin; OpenAI's legacy
// API counts from the prompt's start), across calls for one stream. An
// offset counts characters of the returned text: code points, each byte
// that is not valid UTF-8 one U+FFFD, as the text has them.
//
// Tokens that are not valid UTF-8 (byte-fallback tokens, parts of a
// character) are written as OpenAI's legacy API writes them, "bytes:\xe2\x80":
// as raw bytes, encoding/json would turn every one of them into the same
// U+FFFD key, and a client would keep one alternative of several.
func completionLogprobsOf(bytesOf func(int32) []byte, lps []tokenLogprob, off *textOffsets, final bool) *completionLogprobs {
	out := &completionLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	for _, lp := range lps {
		b := bytesOf(lp.token)
		tk := legacyToken(b)
		out.Tokens = append(out.Tokens, tk)
		out.TokenLogprobs = append(out.TokenLogprobs, lp.logprob)
		// The alternatives and, as OpenAI's legacy format always has it,
		// the sampled token (up to logprobs+1 entries).
		top := make(map[string]float32, len(lp.top)+1)
		for _, t := range lp.top {
			k := legacyToken(bytesOf(t.Token))
			if _, dup := top[k]; !dup {
				top[k] = t.Logprob
			}
		}
		if _, in := top[tk]; !in {
			top[tk] = lp.logprob
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
	}
	bs := make([][]byte, len(lps))
	for i, lp := range lps {
		bs[i] = bytesOf(lp.token)
	}
	out.TextOffset = off.batch(bs, final)
	return out
}

// textOffsets gives each token of a completion its text_offset: where its
// first byte lies in the returned text, the text being every token's bytes
// decoded together as validText decodes them (a character split over byte
// tokens counts once; a byte that never becomes UTF-8 is one U+FFFD).
// Counting each token's characters alone drifted: the two byte tokens of
// one character counted two, and every later offset was one too far.
//
// Offsets are given a batch of tokens at a time (a stream's chunk), and the
// bytes of a batch are decoded together, so a token's offset is exact
// whenever the character it is part of is decided within its batch. Only a
// character still incomplete when its batch goes out (its bytes held back
// in the text) is assumed to complete: if a later token breaks it off, its
// continuing tokens' offsets are one short each.
type textOffsets struct {
	runes int    // characters of the bytes before tail
	tail  []byte // the first bytes of a character not complete yet
}

// batch returns the offsets of the tokens whose bytes are bs, and counts
// them; final says no token follows (an incomplete character at the end is
// then a U+FFFD per byte, as the text's last flush writes it).
func (o *textOffsets) batch(bs [][]byte, final bool) []int {
	buf := o.tail
	starts := make([]int, len(bs))
	for i, b := range bs {
		starts[i] = len(buf)
		buf = append(buf, b...)
	}
	// char[p] is the character byte p of buf belongs to.
	char := make([]int, len(buf)+1)
	c, p := o.runes, 0
	for p < len(buf) {
		if !final && !utf8.FullRune(buf[p:]) {
			break // incomplete: held until a later batch decides it
		}
		_, w := utf8.DecodeRune(buf[p:]) // an invalid byte: width 1
		for k := range w {
			char[p+k] = c
		}
		c++
		p += w
	}
	for k := p; k <= len(buf); k++ {
		char[k] = c // an incomplete tail: assumed to complete as one character
	}
	out := make([]int, len(bs))
	for i, st := range starts {
		out[i] = char[st]
	}
	o.runes = c
	o.tail = append(o.tail[:0:0], buf[p:]...)
	return out
}

// legacyToken is a token's text in the legacy completions logprobs: the
// text itself when it is valid UTF-8, else "bytes:" and each byte as \xNN.
func legacyToken(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.WriteString("bytes:")
	for _, c := range b {
		fmt.Fprintf(&sb, "\\x%02x", c)
	}
	return sb.String()
}

func (s *Server) logprobsOf(j *job, lps []tokenLogprob, off *textOffsets, final bool) any {
	if !j.logprobs {
		return nil
	}
	if j.chat {
		return chatLogprobsOf(s.tok, lps)
	}
	return completionLogprobsOf(s.tok.TokenBytes, lps, off, final)
}

// response is the non-streaming body.
func (s *Server) response(j *job, id string, created int64, o *outcome) *completionResponse {
	finish := o.finish
	c := choice{FinishReason: &finish, Logprobs: s.logprobsOf(j, o.logprobs, &textOffsets{}, true)}
	text := string(o.text)
	obj := "text_completion"
	if j.chat {
		obj = "chat.completion"
		c.Message = &chatMessageOut{Role: "assistant", Content: text}
	} else {
		c.Text = &text
	}
	return &completionResponse{ID: id, Object: obj, Created: created, Model: j.model, SystemFingerprint: fingerprint,
		Choices: []choice{c}, Usage: o.usage()}
}

// sseWriter writes server-sent events and flushes each one. After a write
// fails (the client left) it drops everything.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf []byte
	err error
}

func (w *sseWriter) data(v any) {
	if w.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		w.err = err
		return
	}
	w.raw(b)
}

func (w *sseWriter) raw(b []byte) {
	if w.err != nil {
		return
	}
	w.buf = append(append(append(w.buf[:0], "data: "...), b...), "\n\n"...)
	w.write(w.buf)
}

func (w *sseWriter) write(b []byte) {
	if _, err := w.w.Write(b); err != nil {
		w.err = err
		return
	}
	if err := w.rc.Flush(); err != nil {
		w.err = err
	}
}

// stream writes the response as server-sent events: for chat a first chunk
// with the role, then one chunk per piece of text released (each token's
// logprobs ride on the chunk that carries its text), a chunk with the
// finish reason, the usage chunk when asked, and "data: [DONE]". A failure
// after the headers went out is sent as an error event.
func (s *Server) stream(w http.ResponseWriter, ctx context.Context, cancel context.CancelFunc,
	events <-chan engine.Event, j *job, id string) outcome {
	if !j.headersOut {
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
	}
	sw := &sseWriter{w: w, rc: http.NewResponseController(w)}
	created := time.Now().Unix()
	if rs := j.resume; rs != nil && rs.ID != "" {
		id, created = rs.ID, rs.Created // one stream, whichever home writes it
	}
	obj := "text_completion"
	if j.chat {
		obj = "chat.completion.chunk"
	}
	g := s.newGeneration(j, cancel)
	chunk := func(c choice) *completionResponse {
		r := &completionResponse{ID: id, Object: obj, Created: created, Model: j.model, SystemFingerprint: fingerprint,
			Choices: []choice{c}}
		if j.includeUsage {
			r.Usage = nullJSON
		}
		if len(g.ids) > 0 {
			r.TokenIDs = g.ids
			g.ids = g.ids[:0] // sent before the next token arrives
		}
		return r
	}
	sent := 0             // logprob entries already sent
	textOff := 0          // bytes of text already sent
	var lpOff textOffsets // the text offsets of the tokens sent (completions)
	if j.resume != nil {
		// A continuation: the role chunk and the text of these tokens were
		// sent by the earlier home.
		textOff = g.replay(j.resume.TokenIDs)
		sent = len(g.out.logprobs)
		var bs [][]byte
		for _, t := range j.resume.TokenIDs[:sent] {
			bs = append(bs, s.tok.TokenBytes(t))
		}
		lpOff.batch(bs, false)
	} else if j.chat {
		empty := ""
		sw.data(chunk(choice{Delta: &chatDelta{Role: "assistant", Content: &empty}}))
	} else if err := sw.rc.Flush(); err != nil {
		// Completions have no role chunk: the headers go now, so a client
		// sees its stream open while the request waits or its prompt runs.
		sw.err = err
	}
	// emit sends text and the logprobs not sent yet; last says no token
	// follows (the generation's final text or its finish).
	emit := func(text string, finish *string, last bool) {
		if text == "" && finish == nil {
			return
		}
		c := choice{FinishReason: finish}
		if j.logprobs && (text != "" || sent < len(g.out.logprobs)) {
			c.Logprobs = s.logprobsOf(j, g.out.logprobs[sent:], &lpOff, last)
			sent = len(g.out.logprobs)
		}
		if j.chat {
			c.Delta = &chatDelta{}
			if text != "" {
				c.Delta.Content = &text
			}
		} else {
			c.Text = &text
		}
		textOff += len(text)
		sw.data(chunk(c))
	}

	var tick <-chan time.Time
	if s.cfg.KeepAlive > 0 {
		t := time.NewTicker(s.cfg.KeepAlive)
		defer t.Stop()
		tick = t.C
	}
	for events != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				break
			}
			text := g.token(&ev)
			last := false
			if ev.Done {
				held := g.final(&ev)
				if !(j.tokenIDs && g.out.finish == "abort" && s.stopCtx.Err() != nil) {
					text += held
					last = true // held bytes of a character are a U+FFFD each now
				}
				// else Drain cut this forwarded stream short: the text held
				// back (a partial character, a possible stop string) is not
				// sent, nor are its tokens' ids, so the home that resumes
				// the stream sends it once.
			}
			if j.logprobs && g.done {
				// A stop string ended the text: as in the non-streaming
				// response, keep logprobs only for tokens whose text was sent.
				g.out.logprobs = trimLogprobs(s.tok, g.out.logprobs, g.ts.released)
				sent = min(sent, len(g.out.logprobs))
			}
			emit(text, nil, last)
			if sw.err != nil {
				cancel() // the client is gone; keep reading until the engine closes the channel
			}
		case <-tick:
			if g.out.first.IsZero() {
				sw.write([]byte(": keep-alive\n\n"))
			}
		}
	}
	if g.out.finish == "" {
		g.out.finish = "abort"
	}
	if g.out.err == nil && g.out.finish == "abort" && s.stopCtx.Err() != nil {
		// Drain gave up on this stream: it is not complete, so it must not
		// end as if it were. A forwarded stream just ends short, and the
		// entry node resumes it on another home, as when a home dies; a
		// client of this node gets an error event.
		if !j.tokenIDs {
			sw.data(errDrainCut)
			sw.raw([]byte("[DONE]"))
		}
		return g.out
	}
	if g.out.err != nil {
		sw.data(engineError(g.out.err))
	} else {
		finish := g.out.finish
		emit("", &finish, true)
		if j.includeUsage {
			sw.data(&completionResponse{ID: id, Object: obj, Created: created, Model: j.model,
				SystemFingerprint: fingerprint, Choices: []choice{}, Usage: g.out.usage()})
		}
	}
	sw.raw([]byte("[DONE]"))
	if sw.err != nil && g.out.err == nil && ctx.Err() != nil && g.out.finish != "stop" {
		g.out.finish = "abort"
	}
	// The client left: a write failed, or its context ended the generation
	// before it finished (the writes after that may still have succeeded).
	g.out.clientGone = s.stopCtx.Err() == nil && (sw.err != nil || ctx.Err() != nil && g.out.finish == "abort")
	return g.out
}
