package api

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/model/sample"
	"github.com/conclave-ai/conclave/model/tokenizer"
)

// Limits on request fields.
const (
	maxStops       = 16   // stop strings per request
	maxStopLen     = 256  // bytes per stop string
	maxTopLogprobs = 20   // engine.MaxTopLogprobs
	maxSessionID   = 256  // bytes
	maxInputs      = 2048 // embedding inputs per request
	maxRepeatLastN = 1 << 20
	// minRepeatPenalty keeps a repetition penalty from dividing logits
	// past float32's range (1e-39 made every repeated logit +Inf).
	minRepeatPenalty = 0.01
)

// job is a validated generation request, ready for the engine.
type job struct {
	chat         bool
	model        string
	prompt       []int32
	maxTokens    int
	maxGiven     bool
	maxParam     string // the field that gave maxTokens, for errors ("" is max_tokens)
	sampling     sample.Config
	stops        []string
	ignoreEOS    bool
	logprobs     bool // chat: logprobs; completions: logprobs ≥ 0 given
	topLogprobs  int
	stream       bool
	includeUsage bool
	sessionID    string
	user         string
	resume       *resumeRequest // a continuation of a forwarded stream
	tokenIDs     bool           // add tokenIDsField to stream chunks (forwarded requests)
	headersOut   bool           // a local continuation: the relay already sent the headers
}

// validateGen checks the shared fields and fills j from them.
func (s *Server) validateGen(p *genParams, j *job) *Error {
	switch {
	case p.Model == "":
		return badRequest("model", "you must provide a model parameter")
	case p.Model != s.info.ID:
		return modelNotFound(p.Model)
	case p.N != nil && *p.N != 1:
		return badRequest("n", "n must be 1 (only one choice per request is supported)")
	case p.BestOf != nil && *p.BestOf != 1:
		return badRequest("best_of", "best_of must be 1")
	case p.MaxTokens != nil && *p.MaxTokens < 1:
		return badRequest("max_tokens", "max_tokens must be at least 1, got %d", *p.MaxTokens)
	case !finiteIn(p.Temperature, 0, 2):
		return badRequest("temperature", "temperature must be in [0, 2], got %v", *p.Temperature)
	case !finiteIn(p.TopP, 0, 1):
		return badRequest("top_p", "top_p must be in [0, 1], got %v", *p.TopP)
	case !finiteIn(p.PresencePenalty, -2, 2):
		return badRequest("presence_penalty", "presence_penalty must be in [-2, 2], got %v", *p.PresencePenalty)
	case !finiteIn(p.FrequencyPenalty, -2, 2):
		return badRequest("frequency_penalty", "frequency_penalty must be in [-2, 2], got %v", *p.FrequencyPenalty)
	case !finiteIn(p.MinP, 0, 1):
		return badRequest("min_p", "min_p must be in [0, 1], got %v", *p.MinP)
	case !finiteIn(p.RepetitionPenalty, 0, 10) || (p.RepetitionPenalty != nil && *p.RepetitionPenalty < minRepeatPenalty):
		return badRequest("repetition_penalty", "repetition_penalty must be in [%v, 10], got %v", minRepeatPenalty, *p.RepetitionPenalty)
	case !finiteIn(p.RepeatPenalty, 0, 10) || (p.RepeatPenalty != nil && *p.RepeatPenalty < minRepeatPenalty):
		return badRequest("repeat_penalty", "repeat_penalty must be in [%v, 10], got %v", minRepeatPenalty, *p.RepeatPenalty)
	case p.RepetitionPenalty != nil && p.RepeatPenalty != nil:
		return badRequest("repeat_penalty", "give repetition_penalty (vLLM: the whole prompt and output) or repeat_penalty (llama.cpp: the last repeat_last_n tokens), not both")
	case p.RepeatLastN != nil && p.RepetitionPenalty != nil:
		return badRequest("repeat_last_n", "repeat_last_n is llama.cpp's window for repeat_penalty; repetition_penalty (vLLM) covers the whole prompt and output")
	case p.RepeatLastN != nil && (*p.RepeatLastN < -1 || *p.RepeatLastN > maxRepeatLastN):
		return badRequest("repeat_last_n", "repeat_last_n must be in [-1, %d], got %d", maxRepeatLastN, *p.RepeatLastN)
	case p.TopK != nil && *p.TopK < -1:
		return badRequest("top_k", "top_k must be -1 (off), 0 (off) or positive, got %d", *p.TopK)
	case len(p.LogitBias) > 0:
		return badRequest("logit_bias", "logit_bias is not supported")
	case p.StreamOptions != nil && (p.Stream == nil || !*p.Stream):
		return badRequest("stream_options", "stream_options is only allowed when stream is true")
	case len(p.Stop) > maxStops:
		return badRequest("stop", "at most %d stop strings, got %d", maxStops, len(p.Stop))
	case len(p.SessionID) > maxSessionID:
		return badRequest("session_id", "session_id is longer than %d bytes", maxSessionID)
	}
	for _, st := range p.Stop {
		if st == "" || len(st) > maxStopLen {
			return badRequest("stop", "stop strings must be 1 to %d bytes long", maxStopLen)
		}
	}
	j.model = p.Model
	j.stops = p.Stop
	j.ignoreEOS = p.IgnoreEOS
	j.stream = p.Stream != nil && *p.Stream
	j.includeUsage = p.StreamOptions != nil && p.StreamOptions.IncludeUsage
	j.sessionID = p.SessionID
	j.user = p.User
	j.resume = p.Resume
	if p.MaxTokens != nil {
		j.maxTokens, j.maxGiven = *p.MaxTokens, true
	}
	sc := sample.Config{Temperature: 1} // OpenAI's default temperature
	if p.Temperature != nil {
		sc.Temperature = float32(*p.Temperature)
	}
	if p.TopK != nil && *p.TopK > 0 {
		sc.TopK = *p.TopK
	}
	if p.TopP != nil {
		sc.TopP = float32(*p.TopP)
		if sc.TopP == 0 {
			// The smallest nucleus holding probability 0 is the most
			// probable token alone (the sampler reads TopP 0 as "off").
			sc.TopP, sc.TopK = 1, 1
		}
	}
	if p.MinP != nil {
		sc.MinP = float32(*p.MinP)
	}
	switch {
	case p.RepetitionPenalty != nil:
		// vLLM's: over the whole prompt and output.
		sc.RepeatPenalty, sc.RepeatLastN = float32(*p.RepetitionPenalty), -1
	case p.RepeatPenalty != nil:
		// llama.cpp's: over the last repeat_last_n tokens (default 64; -1
		// the whole context; 0 disables it).
		sc.RepeatPenalty = float32(*p.RepeatPenalty)
		if p.RepeatLastN != nil {
			switch n := *p.RepeatLastN; n {
			case 0:
				sc.RepeatPenalty = 0
			default:
				sc.RepeatLastN = n
			}
		}
	}
	if p.PresencePenalty != nil {
		sc.PresencePenalty = float32(*p.PresencePenalty)
	}
	if p.FrequencyPenalty != nil {
		sc.FrequencyPenalty = float32(*p.FrequencyPenalty)
	}
	if p.Seed != nil {
		sc.Seed = uint64(*p.Seed)
	} else {
		var b [8]byte
		rand.Read(b[:])
		sc.Seed = binary.LittleEndian.Uint64(b[:])
	}
	j.sampling = sc
	return nil
}

// chatJob decodes and validates a chat request and builds its prompt.
func (s *Server) chatJob(body []byte) (*job, *Error) {
	var req chatRequest
	if e := decodeBody(body, &req); e != nil {
		if e.Param == "content" || strings.HasPrefix(e.Param, "messages") {
			// Decoded again message by message, the error names the
			// message it is in (messages[2].content).
			var m struct {
				Messages messageList `json:"messages"`
			}
			if e2 := decodeBody(body, &m); e2 != nil {
				return nil, e2
			}
		}
		return nil, e
	}
	j := &job{chat: true}
	if req.MaxCompletionTokens != nil {
		if *req.MaxCompletionTokens < 1 {
			return nil, badRequest("max_completion_tokens", "max_completion_tokens must be at least 1, got %d", *req.MaxCompletionTokens)
		}
		req.MaxTokens = req.MaxCompletionTokens
		j.maxParam = "max_completion_tokens"
	}
	if e := s.validateGen(&req.genParams, j); e != nil {
		return nil, e
	}
	switch {
	case len(req.Messages) == 0:
		return nil, badRequest("messages", "messages must be a non-empty array")
	case req.TopLogprobs != nil && (*req.TopLogprobs < 0 || *req.TopLogprobs > maxTopLogprobs):
		return nil, badRequest("top_logprobs", "top_logprobs must be in [0, %d], got %d", maxTopLogprobs, *req.TopLogprobs)
	case req.TopLogprobs != nil && *req.TopLogprobs > 0 && (req.Logprobs == nil || !*req.Logprobs):
		return nil, badRequest("top_logprobs", "top_logprobs requires logprobs to be true")
	case len(req.Tools) > 0 && string(req.Tools) != "null" && string(req.Tools) != "[]":
		return nil, badRequest("tools", "tools are not supported by this server")
	case len(req.ToolChoice) > 0 && string(req.ToolChoice) != "null" && string(req.ToolChoice) != `"none"` && string(req.ToolChoice) != `"auto"`:
		return nil, badRequest("tool_choice", "tool_choice is not supported by this server")
	case req.ResponseFormat != nil && req.ResponseFormat.Type != "text" && req.ResponseFormat.Type != "":
		return nil, badRequest("response_format", "response_format %q is not supported (only \"text\")", clip(req.ResponseFormat.Type, 48))
	}
	j.logprobs = req.Logprobs != nil && *req.Logprobs
	if req.TopLogprobs != nil {
		j.topLogprobs = *req.TopLogprobs
	}
	msgs := make([]tokenizer.Message, len(req.Messages))
	for i, m := range req.Messages {
		role := m.Role
		switch role {
		case "system", "user", "assistant":
		case "developer":
			role = "system" // OpenAI's newer name for the system role
		case "":
			// A null message decodes as an empty one: decoded message by
			// message, it is named as what it is.
			var ml struct {
				Messages messageList `json:"messages"`
			}
			if e := decodeBody(body, &ml); e != nil {
				return nil, e
			}
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d].role is missing", i)
		default:
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d].role %q is not supported (system, developer, user, assistant)", i, clip(m.Role, 48))
		}
		if !m.Content.Set && role != "assistant" {
			return nil, badRequest(fmt.Sprintf("messages[%d].content", i), "messages[%d].content is missing", i)
		}
		msgs[i] = tokenizer.Message{Role: role, Content: m.Content.Text}
	}
	prompt, e := chatPrompt(s.tok, msgs)
	if e != nil {
		return nil, e
	}
	j.prompt = prompt
	return j, s.fitContext(j, "messages")
}

// completionJob decodes and validates a text completion request.
func (s *Server) completionJob(body []byte) (*job, *Error) {
	var req completionRequest
	if e := decodeBody(body, &req); e != nil {
		return nil, e
	}
	j := &job{}
	if e := s.validateGen(&req.genParams, j); e != nil {
		return nil, e
	}
	switch {
	case !req.Prompt.Set:
		return nil, badRequest("prompt", "you must provide a prompt")
	case req.Prompt.count() != 1:
		return nil, badRequest("prompt", "exactly one prompt per request is supported, got %d", req.Prompt.count())
	case req.Logprobs != nil && (*req.Logprobs < 0 || *req.Logprobs > maxTopLogprobs):
		return nil, badRequest("logprobs", "logprobs must be in [0, %d], got %d", maxTopLogprobs, *req.Logprobs)
	case req.Echo:
		return nil, badRequest("echo", "echo is not supported")
	case req.Suffix != nil && *req.Suffix != "":
		return nil, badRequest("suffix", "suffix is not supported")
	}
	if req.Logprobs != nil {
		j.logprobs, j.topLogprobs = true, *req.Logprobs
	}
	if len(req.Prompt.Texts) == 1 {
		j.prompt = s.tok.Encode(req.Prompt.Texts[0], true, true)
	} else {
		j.prompt = req.Prompt.Tokens[0]
		for _, t := range j.prompt {
			if t < 0 || int(t) >= s.tok.VocabSize() {
				return nil, badRequest("prompt", "token id %d is outside the vocabulary of %d", t, s.tok.VocabSize())
			}
		}
	}
	if len(j.prompt) == 0 {
		return nil, badRequest("prompt", "the prompt is empty")
	}
	return j, s.fitContext(j, "prompt")
}

// fitContext checks that prompt plus max_tokens fit the context, and picks
// max_tokens when the request gave none.
func (s *Server) fitContext(j *job, param string) *Error {
	ctx, n := s.info.Context, len(j.prompt)
	room := ctx - n
	switch {
	case room < 1:
		return badRequestCode(param, "context_length_exceeded",
			"this model's maximum context length is %d tokens, and the prompt has %d: it leaves no room for a completion (at most %d prompt tokens)", ctx, n, ctx-1)
	case j.maxGiven && j.maxTokens > room:
		p := cmp.Or(j.maxParam, "max_tokens")
		if j.maxTokens > ctx { // (and the total could overflow)
			return badRequestCode(p, "context_length_exceeded",
				"this model's maximum context length is %d tokens, and %s is %d; with this prompt of %d tokens, at most %d",
				ctx, p, j.maxTokens, n, room)
		}
		return badRequestCode(p, "context_length_exceeded",
			"this model's maximum context length is %d tokens; the prompt has %d tokens and %s is %d (%d in total)",
			ctx, n, p, j.maxTokens, n+j.maxTokens)
	case !j.maxGiven:
		j.maxTokens = room
		if s.cfg.DefaultMaxTokens > 0 {
			j.maxTokens = min(room, s.cfg.DefaultMaxTokens)
		}
	}
	return nil
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request, body []byte) {
	j, e := jobFor(r, body, s.chatJob)
	if e == nil {
		e = s.checkResume(r, j)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	s.run(w, r, j)
}

func (s *Server) handleCompletion(w http.ResponseWriter, r *http.Request, body []byte) {
	j, e := jobFor(r, body, s.completionJob)
	if e == nil {
		e = s.checkResume(r, j)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	s.run(w, r, j)
}

// checkResume sets how j's stream is written for the node that forwarded
// it, and checks a continuation (resumeField): only a forwarded streaming
// request may carry one, with at most max_tokens ids in the vocabulary.
func (s *Server) checkResume(r *http.Request, j *job) *Error {
	forwarded := s.forwarded(r)
	j.tokenIDs = forwarded && j.stream
	j.headersOut = r.Context().Value(keyHeadersOut{}) != nil
	rs := j.resume
	switch {
	case rs == nil:
		return nil
	case !forwarded && !j.headersOut:
		return badRequest(resumeField, "%s is an internal field between cluster nodes", resumeField)
	case !j.stream:
		return badRequest(resumeField, "%s requires stream", resumeField)
	case len(rs.TokenIDs) > j.maxTokens:
		return badRequest(resumeField, "%d tokens to resume from, more than max_tokens %d", len(rs.TokenIDs), j.maxTokens)
	}
	for _, t := range rs.TokenIDs {
		if t < 0 || int(t) >= s.tok.VocabSize() {
			return badRequest(resumeField, "token id %d is outside the vocabulary of %d", t, s.tok.VocabSize())
		}
	}
	return nil
}

// outcome is what a generation produced, for the response and the log.
type outcome struct {
	text      []byte
	logprobs  []tokenLogprob
	finish    string
	prompt    int
	cached    int
	generated int
	first     time.Time // first token's arrival
	err       error     // a failure after the stream started
	resumed   int       // of generated, tokens streamed by an earlier home (a continuation)
	// clientGone: a streamed response could not be written (the client
	// left mid-stream), not because the drain gave up on it.
	clientGone bool
}

// jsonLogprob is lp, finite: JSON has no −Inf (a token of probability 0)
// or NaN, and one would fail the whole response. vLLM writes −9999 for −Inf.
func jsonLogprob(lp float32) float32 {
	if lp != lp || lp < -9999 {
		return -9999
	}
	return lp
}

// tokenLogprob is one generated token with its log-probability and
// alternatives, in the engine's ids.
type tokenLogprob struct {
	token   int32
	logprob float32
	top     []engine.TokenLogprob
}

// run submits j to the engine and writes the response, streaming or not.
func (s *Server) run(w http.ResponseWriter, r *http.Request, j *job) {
	ri := info(r)
	// Latencies count from the request's arrival: reading and checking it,
	// routing its session, a failed forward to another home are the
	// client's wait too, and so is what the entry node that forwarded it
	// here had spent on them.
	start := ri.start
	if start.IsZero() {
		start = time.Now()
	}
	start = start.Add(-s.waited(r))
	sessionID := j.sessionID
	if sessionID == "" {
		sessionID = r.Header.Get("X-Session-ID")
	}
	// The generation ends when the client goes away (r's context), when a
	// stop string completes (cancel), or when Drain gives up (stopCtx).
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stopWatch := context.AfterFunc(s.stopCtx, cancel)
	defer stopWatch()

	req := engine.Request{
		ID: ri.id, SessionID: sessionID, Prompt: j.prompt, MaxTokens: j.maxTokens, Sampling: j.sampling,
		IgnoreEOS: j.ignoreEOS, Logprobs: j.logprobs, TopLogprobs: j.topLogprobs,
	}
	var events <-chan engine.Event
	var err error
	if rs := j.resume; rs != nil {
		// Continue from the tokens already streamed: they extend the
		// prompt (the same KV state an uninterrupted run would have), count
		// against max_tokens, and used their sampler draws.
		n := len(rs.TokenIDs)
		req.Prompt = append(append(make([]int32, 0, len(j.prompt)+n), j.prompt...), rs.TokenIDs...)
		req.MaxTokens -= n
		req.Sampling.Skip = n
		req.Sampling.PromptLen = len(j.prompt) // the resumed tokens were generated
		if fin, ok := s.resumedFinish(j); ok {
			events = finishedEvents(len(req.Prompt), fin)
		}
	}
	if events == nil {
		events, err = s.eng.Submit(ctx, req)
	}
	if err != nil {
		e := engineError(err)
		if e.Code == "context_length_exceeded" && !j.chat {
			e.Param = "prompt"
		}
		if j.headersOut {
			// A local continuation: the stream is already open.
			sw := &sseWriter{w: w, rc: http.NewResponseController(w)}
			sw.data(e)
			sw.raw([]byte("[DONE]"))
			return
		}
		writeError(w, e)
		return
	}
	var out outcome
	id := newID(j.chat)
	if j.stream {
		out = s.stream(w, ctx, cancel, events, j, id)
		ri.clientGone = out.clientGone // logged and counted as 499, not 200
	} else {
		out = s.collect(cancel, events, j)
		switch {
		case out.err != nil:
			writeError(w, engineError(out.err))
		case out.finish == "abort" && s.stopCtx.Err() != nil:
			// Drain gave up on it: not a partial 200, but a draining 503,
			// which an entry node that forwarded it answers by re-homing
			// the session and running the request there.
			w.Header().Set(HeaderDraining, "1")
			writeError(w, errDrainCut)
		case r.Context().Err() != nil:
			// The client left, or only closed its side (which net/http
			// cannot tell apart): answer what was generated (finish
			// "abort"), and log and count it as 499.
			ri.clientGone = s.stopCtx.Err() == nil // not the drain giving up
			writeJSON(w, http.StatusOK, s.response(j, id, start.Unix(), &out))
		default:
			writeJSON(w, http.StatusOK, s.response(j, id, start.Unix(), &out))
		}
	}
	end := time.Now()
	first := out.first
	if j.resume != nil {
		first = time.Time{} // the client's first token came from the earlier home: no TTFT here
	}
	s.metrics.observe(start, first, end, out.generated-out.resumed, out.finish)
	if j.resume != nil && !out.first.IsZero() && out.generated-out.resumed > 1 {
		s.metrics.tpot.Observe(end.Sub(out.first).Seconds() / float64(out.generated-out.resumed-1))
	}
	ri.attrs = append(ri.attrs, slog.Int("prompt_tokens", out.prompt), slog.Int("cached_tokens", out.cached),
		slog.Int("completion_tokens", out.generated), slog.String("finish_reason", out.finish),
		slog.Bool("stream", j.stream), slog.Int64("seed", int64(j.sampling.Seed)))
	if !out.first.IsZero() {
		ri.attrs = append(ri.attrs, slog.Duration("ttft", out.first.Sub(start)))
	}
	if sessionID != "" {
		ri.attrs = append(ri.attrs, slog.String("session_id", sessionID))
	}
	if out.err != nil {
		ri.attrs = append(ri.attrs, slog.String("error", out.err.Error()))
	}
	if out.resumed > 0 {
		ri.attrs = append(ri.attrs, slog.Int("resumed_tokens", out.resumed))
	}
}

// resumedFinish reports whether a continuation has nothing left to
// generate: its tokens already reach max_tokens, or the last one ends the
// generation.
func (s *Server) resumedFinish(j *job) (engine.FinishReason, bool) {
	ids := j.resume.TokenIDs
	switch {
	case len(ids) > 0 && !j.ignoreEOS && s.tok.IsEOG(ids[len(ids)-1]):
		return engine.FinishStop, true
	case len(ids) >= j.maxTokens:
		return engine.FinishLength, true
	}
	return "", false
}

// finishedEvents is the event stream of a generation that ends at once.
func finishedEvents(prompt int, fin engine.FinishReason) <-chan engine.Event {
	ch := make(chan engine.Event, 1)
	ch <- engine.Event{Done: true, FinishReason: fin, PromptTokens: prompt}
	close(ch)
	return ch
}

// generation is the per-token state shared by collect and stream.
type generation struct {
	j      *job
	ts     *textStream
	tok    *tokenizer.Tokenizer
	cancel context.CancelFunc
	out    outcome
	done   bool    // a stop string completed: ignore later tokens
	ids    []int32 // with j.tokenIDs: tokens not yet sent in a chunk
}

// token handles one event's token and returns the text it releases.
func (g *generation) token(ev *engine.Event) string {
	if g.done || !ev.HasToken {
		return ""
	}
	if g.out.first.IsZero() {
		g.out.first = time.Now()
	}
	g.out.generated++
	if g.j.tokenIDs {
		g.ids = append(g.ids, ev.Token)
	}
	if g.j.logprobs {
		for i := range ev.TopLogprobs {
			ev.TopLogprobs[i].Logprob = jsonLogprob(ev.TopLogprobs[i].Logprob)
		}
		g.out.logprobs = append(g.out.logprobs, tokenLogprob{ev.Token, jsonLogprob(ev.Logprob), ev.TopLogprobs})
	}
	text, stopped := g.ts.push(g.tok.TokenBytes(ev.Token))
	if stopped {
		g.done = true
		g.out.finish = "stop"
		g.cancel() // the engine ends the sequence at its next step
	}
	return text
}

// replay feeds a continuation's tokens, already streamed by an earlier
// home, through the text stream, so that stop strings and UTF-8 sequences
// that span the seam are handled as in one generation. It returns the
// bytes of text they released (already sent). Their logprobs were sent
// too: placeholders keep the offsets of later tokens right.
func (g *generation) replay(ids []int32) (sent int) {
	for _, t := range ids {
		g.out.generated++
		if g.j.logprobs {
			g.out.logprobs = append(g.out.logprobs, tokenLogprob{token: t})
		}
		text, stopped := g.ts.push(g.tok.TokenBytes(t))
		sent += len(text)
		if stopped { // the earlier home would have ended here
			g.done, g.out.finish = true, "stop"
			g.cancel()
			break
		}
	}
	g.out.resumed = g.out.generated
	return sent
}

// final handles the Done event; it returns any text still held back.
func (g *generation) final(ev *engine.Event) string {
	// A continuation's prompt included the tokens it resumed from.
	g.out.prompt = ev.PromptTokens - g.out.resumed
	g.out.cached = min(ev.CachedTokens, g.out.prompt)
	if g.done {
		return ""
	}
	switch {
	case ev.Err != nil && !errors.Is(ev.Err, context.Canceled):
		g.out.err = ev.Err
		g.out.finish = "error"
	case ev.FinishReason == engine.FinishStop:
		g.out.finish = "stop"
	case ev.FinishReason == engine.FinishLength:
		g.out.finish = "length"
	default:
		g.out.finish = "abort" // cancelled: the client left or the server is draining
	}
	return g.ts.flush()
}

func (s *Server) newGeneration(j *job, cancel context.CancelFunc) *generation {
	return &generation{j: j, ts: newTextStream(j.stops), tok: s.tok, cancel: cancel,
		out: outcome{prompt: len(j.prompt)}}
}

// collect reads every event for a non-streaming response.
func (s *Server) collect(cancel context.CancelFunc, events <-chan engine.Event, j *job) outcome {
	g := s.newGeneration(j, cancel)
	for ev := range events {
		g.out.text = append(g.out.text, g.token(&ev)...)
		if ev.Done {
			g.out.text = append(g.out.text, g.final(&ev)...)
		}
	}
	if g.out.finish == "" {
		g.out.finish = "abort"
	}
	if g.j.logprobs && g.done {
		// Keep logprobs only for the tokens whose text was returned.
		g.out.logprobs = trimLogprobs(s.tok, g.out.logprobs, g.ts.released)
	}
	return g.out
}

// trimLogprobs keeps the tokens whose bytes start within the first n token
// bytes (textStream.released: the text may be longer, with U+FFFD for
// invalid bytes).
func trimLogprobs(tok *tokenizer.Tokenizer, lps []tokenLogprob, n int) []tokenLogprob {
	off := 0
	for i, lp := range lps {
		if off >= n {
			return lps[:i]
		}
		off += len(tok.TokenBytes(lp.token))
	}
	return lps
}

func newID(chat bool) string {
	var b [12]byte
	rand.Read(b[:])
	if chat {
		return "chatcmpl-" + hex.EncodeToString(b[:])
	}
	return "cmpl-" + hex.EncodeToString(b[:])
}
