package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"time"
)

// Result is one request as the client saw it. Latencies are milliseconds;
// those that did not happen (no output, one output token) are 0 and left
// out of summaries.
type Result struct {
	Index   int `json:"index"`
	Session int `json:"session,omitempty"`
	Turn    int `json:"turn,omitempty"`
	// StartMs is when the request was sent, after the level's start.
	StartMs float64 `json:"start_ms"`
	// PromptTokens is usage.prompt_tokens when the server sent it, else
	// PromptWords; PromptReported says which.
	PromptWords    int  `json:"prompt_words"`
	PromptTokens   int  `json:"prompt_tokens"`
	PromptReported bool `json:"prompt_reported"`
	MaxTokens      int  `json:"max_tokens"`
	// OutputTokens is usage.completion_tokens when sent, else Chunks;
	// OutputReported says which.
	OutputTokens   int     `json:"output_tokens"`
	OutputReported bool    `json:"output_reported"`
	Chunks         int     `json:"chunks"` // SSE chunks that carried output text
	TTFTMs         float64 `json:"ttft_ms"`
	TPOTMs         float64 `json:"tpot_ms"`
	E2EMs          float64 `json:"e2e_ms"`
	// ITLMs are the gaps between output chunks (Chunks − 1 of them): per
	// token when the server sends one token a chunk, as OpenAI's API and
	// most servers do; the report summarizes them rather than listing them.
	ITLMs  []float64 `json:"-"`
	Finish string    `json:"finish_reason,omitempty"`
	// Resent counts the times the transport sent the request again on a
	// fresh connection (a pooled one turned out closed); the latencies are
	// the last attempt's.
	Resent int `json:"resent,omitempty"`
	// Error is the kind of failure ("" for success): http_NNN, timeout,
	// canceled, connection, malformed_stream, truncated, server_error,
	// no_output, session_aborted (a turn not sent: an earlier turn of its
	// session failed). Status is the HTTP status when one came; ErrorType and
	// ErrorMessage are from the server's error object.
	Error        string `json:"error,omitempty"`
	Status       int    `json:"status,omitempty"`
	ErrorType    string `json:"error_type,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`

	answer string // content text, for the next turn of a session
}

// errSessionAborted is the Error of a session's turn not sent because an
// earlier turn failed; errInterrupted that of a request cut short because
// the run was (its level leaves it out of every count).
const (
	errSessionAborted = "session_aborted"
	errInterrupted    = "interrupted"
)

// OK reports whether the request succeeded.
func (r *Result) OK() bool { return r.Error == "" }

// errorKind is the Result.Error name of err.
func errorKind(err error, status int) string {
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrHTTPStatus):
		return "http_" + strconv.Itoa(status)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrMalformedStream):
		return "malformed_stream"
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrServerError):
		return "server_error"
	case errors.Is(err, ErrNoOutput):
		return "no_output"
	}
	return "connection"
}

// measure fills r's timings and token counts from a stream sent at t0 and
// finished at end. Pure, so its arithmetic is tested without a server.
func measure(r *Result, s streamResult, t0, end time.Time) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.Chunks = len(s.Times)
	r.E2EMs = ms(end.Sub(t0))
	r.Finish = s.Finish
	r.PromptTokens = r.PromptWords
	r.OutputTokens = len(s.Times)
	if s.Usage != nil {
		if s.Usage.PromptTokens > 0 {
			r.PromptTokens, r.PromptReported = s.Usage.PromptTokens, true
		}
		if s.Usage.CompletionTokens > 0 {
			r.OutputTokens, r.OutputReported = s.Usage.CompletionTokens, true
		}
	}
	if len(s.Times) == 0 {
		return
	}
	r.TTFTMs = ms(s.Times[0].Sub(t0))
	r.ITLMs = make([]float64, len(s.Times)-1)
	for i := 1; i < len(s.Times); i++ {
		r.ITLMs[i-1] = ms(s.Times[i].Sub(s.Times[i-1]))
	}
	if r.OutputTokens > 1 {
		r.TPOTMs = (r.E2EMs - r.TTFTMs) / float64(r.OutputTokens-1)
	}
}

// client sends requests to one server.
type client struct {
	hc     *http.Client
	base   string // without a trailing slash or /v1
	apiKey string
	now    func() time.Time
}

func newClient(hc *http.Client, base, apiKey string) *client {
	base = strings.TrimSuffix(strings.TrimRight(base, "/"), "/v1")
	return &client{hc: hc, base: base, apiKey: apiKey, now: time.Now}
}

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

func (c *client) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	return req, nil
}

// send sends q and reads its stream; levelStart anchors Result.StartMs.
// It never returns an error: failures are recorded in the Result, a
// failure because ctx itself ended (the run was interrupted) as
// errInterrupted, which the level leaves out.
func (c *client) send(ctx context.Context, cfg Config, q *request, levelStart time.Time) Result {
	r := c.sendOnce(ctx, cfg, q, levelStart)
	if !r.OK() && ctx.Err() != nil {
		r.Error = errInterrupted
	}
	return r
}

func (c *client) sendOnce(ctx context.Context, cfg Config, q *request, levelStart time.Time) Result {
	r := Result{Index: q.Index, Session: q.Session, Turn: q.Turn, PromptWords: q.PromptWords,
		PromptTokens: q.PromptWords, MaxTokens: q.MaxTokens}
	fail := func(err error, status int) Result {
		r.Error, r.Status = errorKind(err, status), status
		if r.ErrorMessage == "" {
			r.ErrorMessage = truncate(err.Error(), 300)
		}
		return r
	}
	body, err := json.Marshal(q.body(cfg))
	if err != nil {
		return fail(err, 0)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodPost, cfg.Endpoint.Path(), body)
	if err != nil {
		return fail(err, 0)
	}
	req.Header.Set("Accept", "text/event-stream")
	// A generation changes nothing on the server, so the transport may
	// resend it when a pooled keep-alive connection turns out closed
	// (llama-server closes idle ones); a nil value marks the request so
	// without sending the header.
	req.Header["Idempotency-Key"] = nil
	if q.SessionID != "" {
		req.Header.Set("X-Session-ID", q.SessionID)
	}
	// Each attempt's clock starts when it asks for a connection, so a
	// resend on a fresh connection is timed on its own, not with the
	// failed attempt's wait.
	start := c.now()
	t0, attempts := start, 0
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GetConn: func(string) { t0, attempts = c.now(), attempts+1 },
	}))
	r.StartMs = float64(start.Sub(levelStart)) / float64(time.Millisecond)
	resp, err := c.hc.Do(req)
	r.Resent = max(attempts-1, 0)
	if err != nil {
		return fail(err, 0)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		e := parseAPIError(data)
		r.ErrorType, r.ErrorMessage = e.Type, truncate(e.Message, 300)
		if r.ErrorType == "" {
			r.ErrorType = e.Code
		}
		if r.ErrorMessage == "" {
			r.ErrorMessage = truncate(strings.TrimSpace(string(data)), 300)
		}
		return fail(fmt.Errorf("%w: %s", ErrHTTPStatus, resp.Status), resp.StatusCode)
	}
	s, err := readStream(resp.Body, c.now)
	end := c.now()
	// Read to EOF (past [DONE]): a body closed early costs the keep-alive
	// connection, and the next request on this worker would pay a new one.
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	measure(&r, s, t0, end)
	r.answer = string(s.Text)
	if err == nil && len(s.Times) == 0 {
		err = ErrNoOutput
	}
	if err != nil {
		r.ErrorType = s.Err.Type
		if s.Err.Message != "" {
			r.ErrorMessage = truncate(s.Err.Message, 300)
		}
		return fail(err, resp.StatusCode)
	}
	return r
}

// Models lists the ids of GET /v1/models on the server at base.
func Models(ctx context.Context, hc *http.Client, base, apiKey string) ([]string, error) {
	c := newClient(hc, base, apiKey)
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/models", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/models: %w: %s %s", ErrHTTPStatus, resp.Status, truncate(string(data), 200))
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("GET /v1/models: %w", err)
	}
	ids := make([]string, 0, len(list.Data))
	for _, m := range list.Data {
		if m.ID != "" {
			ids = append(ids, m.ID)
		}
	}
	return ids, nil
}
