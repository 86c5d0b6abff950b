package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Resuming a stream whose home died.
//
// A streaming request forwarded to a session's home is relayed event by
// event (streamRelay), not through a plain reverse proxy: the home, seeing
// HeaderForwarded, adds to each chunk the ids of the tokens whose text that
// chunk completes (tokenIDsField), and the relay strips them before the
// client sees the chunk and remembers them. When the home's stream breaks
// before "data: [DONE]", the entry node re-homes the session and sends the
// same request with resumeField to the new home (or runs it itself): the
// new home prefills prompt + those tokens, generates the rest of max_tokens,
// and streams only the continuation (no role chunk, the same id and
// created), with the usage of the whole completion. Kernels are
// batch-invariant and the sampler skips the draws already used
// (sample.Config.Skip), so the client sees one stream, identical to an
// undisturbed one.

// tokenIDsField is the chunk field, only on forwarded streams, carrying the
// ids of the tokens generated since the previous chunk. The home writes it
// last in the chunk object, so the relay strips it by cutting the suffix.
const tokenIDsField = "conclave_token_ids"

// resumeField is the request field that continues a generation. Only
// forwarded requests (HeaderForwarded, sent node to node) may carry it; a
// client request carrying it is rejected with a 400 (invalid_request_error,
// param conclave_resume). The ids are checked against the vocabulary like
// prompt token ids, so a caller that forged the header gains nothing a
// completion prompt of token ids would not give.
const resumeField = "conclave_resume"

// resumeRequest is resumeField's value.
type resumeRequest struct {
	// TokenIDs were generated and streamed (their text, less what the
	// stop-string and UTF-8 hold-back kept) before the old home failed.
	TokenIDs []int32 `json:"token_ids"`
	// ID and Created are the stream's chunk id and creation time, kept so
	// the client sees one stream.
	ID      string `json:"id"`
	Created int64  `json:"created"`
}

// keyHeadersOut marks, in a request's context, a local continuation of a
// stream whose response headers (and first chunks) the relay already sent.
type keyHeadersOut struct{}

// errHomeLost is how a relayed stream fails after it started: the home's
// connection broke before "data: [DONE]".
var errHomeLost = errors.New("api: the session's home failed mid-stream")

// hopHeaders are not copied between the client and the home.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Accept-Encoding", "Content-Length"}

// isStream reports whether a request body asks for a streamed response.
func isStream(body []byte) bool {
	var p struct {
		Stream *bool `json:"stream"`
	}
	// Keys as the handler's decoder matches them (exactly).
	return json.Unmarshal(dropMiscased(body, genParamsType), &p) == nil && p.Stream != nil && *p.Stream
}

// hasResume reports whether a request body carries resumeField under any
// spelling the request decoder accepts: encoding/json matches object keys
// case-insensitively (Unicode folding: "ſ" is an "s") and after unescaping
// ("\u005f" is "_").
func hasResume(body []byte) bool {
	if !mayHoldKey(body, resumeField) {
		return false // the common case, without parsing
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(body, &p) != nil {
		return false
	}
	for k := range p {
		if strings.EqualFold(k, resumeField) {
			return true
		}
	}
	return false
}

// mayHoldKey is false only when body, all ASCII and free of \u escapes,
// does not hold key (ASCII lower case) in any letter case.
func mayHoldKey(body []byte, key string) bool {
	for _, c := range body {
		if c >= utf8.RuneSelf {
			return true
		}
	}
	if bytes.Contains(body, []byte(`\u`)) {
		return true
	}
	for i := 0; i+len(key) <= len(body); i++ {
		if bytes.EqualFold(body[i:i+len(key)], []byte(key)) {
			return true
		}
	}
	return false
}

// streamRelay relays one streaming request to the session's home and, when
// the home fails mid-stream, continues it on the next home. Not safe for
// concurrent use.
type streamRelay struct {
	s    *Server
	w    http.ResponseWriter
	rc   *http.ResponseController
	r    *http.Request
	body []byte

	headersOut bool    // the response headers went to the client
	ids        []int32 // tokens whose chunks were relayed
	id         string  // the stream's chunk id
	created    int64
	finished   bool // a chunk with a finish_reason was relayed
	clientGone bool
	cut        bool   // the relay stopped with the handler's context (client gone or drain)
	resumes    int    // continuations sent after a failure
	buf        []byte // the event being written
}

func newStreamRelay(s *Server, w http.ResponseWriter, r *http.Request, body []byte) *streamRelay {
	return &streamRelay{s: s, w: w, rc: http.NewResponseController(w), r: r, body: body}
}

// resumeBody is the original body with resumeField set to what was relayed.
func (sr *streamRelay) resumeBody() ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(sr.body, &m); err != nil {
		return nil, err
	}
	rs, err := json.Marshal(resumeRequest{TokenIDs: sr.ids, ID: sr.id, Created: sr.created})
	if err != nil {
		return nil, err
	}
	m[resumeField] = rs
	return json.Marshal(m)
}

// relay sends the request (a continuation once headers are out) to target
// and relays its events. It returns nil when the stream ended with
// "data: [DONE]", when the client left, or when target answered with
// something other than a stream (relayed as is); an error when target
// could not be reached, was draining, or failed mid-stream; the caller then
// re-homes and calls relay again, or serves locally (local).
func (sr *streamRelay) relay(target string) error {
	body := sr.body
	if sr.headersOut {
		if sr.finished {
			// Only the usage chunk and [DONE] were lost; the text is complete.
			sr.write([]byte("data: [DONE]\n\n"))
			return nil
		}
		var err error
		if body, err = sr.resumeBody(); err != nil {
			return err
		}
		sr.resumes++
	}
	req, err := http.NewRequestWithContext(sr.r.Context(), http.MethodPost, strings.TrimSuffix(target, "/")+sr.r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = sr.r.Header.Clone()
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	req.Header.Del("Content-Encoding") // body is the decoded one
	sr.s.markForwarded(req.Header, req.Method, req.URL, body, info(sr.r))
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	req.Header["X-Idempotency-Key"] = nil // resendable on a stale pooled connection
	resp, err := forwardTransport.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(HeaderDraining) != "" {
		return errHomeDraining
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sr.passThrough(resp)
		return nil
	}
	if !sr.headersOut {
		h := sr.w.Header()
		for k, v := range resp.Header {
			if k != "X-Request-Id" && k != "Content-Length" {
				h[k] = v
			}
		}
		sr.w.WriteHeader(http.StatusOK)
		sr.headersOut = true
	}
	return sr.events(resp.Body)
}

// passThrough relays a response that is not a stream: as is while nothing
// was sent, else as an error event ending the stream.
func (sr *streamRelay) passThrough(resp *http.Response) {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if !sr.headersOut {
		h := sr.w.Header()
		for k, v := range resp.Header {
			if k != "X-Request-Id" && k != "Content-Length" {
				h[k] = v
			}
		}
		sr.w.WriteHeader(resp.StatusCode)
		sr.w.Write(b)
		return
	}
	if !json.Valid(b) {
		e := &Error{Status: http.StatusBadGateway, Type: typeServer,
			Message: fmt.Sprintf("continuing the stream on the session's new home failed with status %d", resp.StatusCode)}
		b, _ = json.Marshal(e)
	}
	sr.write(append(append([]byte("data: "), bytes.TrimSpace(b)...), "\n\n"...))
	sr.write([]byte("data: [DONE]\n\n"))
}

// events relays a home's SSE stream line by line (the home writes every
// event as one line), stripping and remembering tokenIDsField. It returns
// nil after "data: [DONE]" or when the client left, errHomeLost when the
// stream ended before.
func (sr *streamRelay) events(body io.Reader) error {
	rd := bufio.NewReaderSize(body, 64<<10)
	for {
		line, err := rd.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A longer line than any chunk we write: pass it through whole.
			rest, err2 := rd.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), err2
		}
		if err != nil {
			if sr.r.Context().Err() != nil {
				sr.cut = true // the client left, or this node's drain gave up
				return nil
			}
			return fmt.Errorf("%w: %v", errHomeLost, err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			continue
		}
		payload, isData := bytes.CutPrefix(line, []byte("data: "))
		switch {
		// line points into the reader's buffer: build the event in sr.buf.
		case !isData: // comments (keep-alives) and other fields
			sr.buf = append(append(sr.buf[:0], line...), "\n\n"...)
			sr.write(sr.buf)
		case string(payload) == "[DONE]":
			sr.write([]byte("data: [DONE]\n\n"))
			return nil
		default:
			sr.buf = append(append(append(sr.buf[:0], "data: "...), sr.chunk(payload)...), "\n\n"...)
			sr.write(sr.buf)
		}
		if sr.clientGone {
			return nil
		}
	}
}

// chunk notes what a relayed chunk tells (its id, creation time, finish
// reason and token ids) and returns it without tokenIDsField.
func (sr *streamRelay) chunk(payload []byte) []byte {
	if sr.id == "" {
		var head struct {
			ID      string `json:"id"`
			Created int64  `json:"created"`
		}
		if json.Unmarshal(payload, &head) == nil {
			sr.id, sr.created = head.ID, head.Created
		}
	}
	// A JSON string never holds an unescaped quote, so neither pattern can
	// match inside the text.
	if bytes.Contains(payload, []byte(`"finish_reason":"`)) || bytes.HasPrefix(payload, []byte(`{"error"`)) {
		sr.finished = true
	}
	ids, rest, ok := cutTokenIDs(payload)
	if !ok {
		return payload
	}
	sr.ids = append(sr.ids, ids...)
	return rest
}

// cutTokenIDs splits `{…,"conclave_token_ids":[1,2]}` into the ids and
// `{…}`; ok is false when the chunk does not end with the field.
func cutTokenIDs(payload []byte) (ids []int32, rest []byte, ok bool) {
	key := []byte(`,"` + tokenIDsField + `":`)
	i := bytes.LastIndex(payload, key)
	if i < 0 || !bytes.HasSuffix(payload, []byte("]}")) {
		return nil, payload, false
	}
	if err := json.Unmarshal(payload[i+len(key):len(payload)-1], &ids); err != nil {
		return nil, payload, false
	}
	rest = append(payload[:i:i], '}')
	return ids, rest, true
}

// write sends b to the client and flushes it; after a failed write the
// client is gone and the relay stops.
func (sr *streamRelay) write(b []byte) {
	if sr.clientGone {
		return
	}
	if _, err := sr.w.Write(b); err != nil {
		sr.clientGone = true
		return
	}
	if err := sr.rc.Flush(); err != nil {
		sr.clientGone = true
	}
}

// local continues the stream on this node: the handler runs the resume
// itself, writing into the response already started.
func (sr *streamRelay) local(h func(w http.ResponseWriter, r *http.Request, body []byte)) {
	if !sr.headersOut {
		h(sr.w, sr.r, sr.body)
		return
	}
	if sr.finished {
		sr.write([]byte("data: [DONE]\n\n"))
		return
	}
	body, err := sr.resumeBody()
	if err != nil {
		sr.write([]byte("data: [DONE]\n\n"))
		return
	}
	sr.resumes++
	h(sr.w, sr.r.WithContext(context.WithValue(sr.r.Context(), keyHeadersOut{}, true)), body)
}
