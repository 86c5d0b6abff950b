package serve

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// MaxEventLine bounds one line of an event stream; a longer line is a
// malformed stream, not an allocation.
const MaxEventLine = 1 << 20

// Event is one Server-Sent Event.
type Event struct {
	Name string // the "event:" field; "" is the default "message"
	Data []byte // "data:" lines joined by '\n'; valid until the next Next
}

// EventReader reads a text/event-stream as the WHATWG HTML standard defines
// it: lines end in "\r\n", "\n" or "\r"; "data:" lines accumulate; a blank
// line dispatches; lines starting with ':' are comments; unknown fields are
// ignored. Unlike the standard, data pending at end of input is dispatched,
// because some servers end with "data: [DONE]\n" and no blank line, and an
// "error:" line (older llama.cpp servers report a failure mid-stream so,
// then send [DONE]) is an event named "error" carrying its value.
type EventReader struct {
	sc      *bufio.Scanner
	name    []byte
	data    []byte
	hasData bool
}

// NewEventReader reads events from r; lines are at most MaxEventLine bytes.
func NewEventReader(r io.Reader) *EventReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxEventLine)
	sc.Split(new(lineSplitter).split)
	return &EventReader{sc: sc}
}

// Next returns the next event; io.EOF after the last one. A line over
// MaxEventLine is ErrMalformedStream; a read error is returned as it is.
func (e *EventReader) Next() (Event, error) {
	e.name, e.data, e.hasData = e.name[:0], e.data[:0], false
	for e.sc.Scan() {
		line := e.sc.Bytes()
		if len(line) == 0 {
			if e.hasData {
				return Event{Name: string(e.name), Data: e.data}, nil
			}
			e.name = e.name[:0]
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "data":
			if e.hasData {
				e.data = append(e.data, '\n')
			}
			e.data = append(e.data, value...)
			e.hasData = true
		case "event":
			e.name = append(e.name[:0], value...)
		case "error":
			e.name = append(e.name[:0], "error"...)
			if e.hasData {
				e.data = append(e.data, '\n')
			}
			e.data = append(e.data, value...)
			e.hasData = true
		}
	}
	if err := e.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Event{}, fmt.Errorf("%w: line over %d bytes", ErrMalformedStream, MaxEventLine)
		}
		return Event{}, err
	}
	if e.hasData {
		e.hasData = false
		return Event{Name: string(e.name), Data: e.data}, nil
	}
	return Event{}, io.EOF
}

// lineSplitter splits the three SSE line endings for a bufio.Scanner. A
// '\r' ends its line at once, so a line is not held until the server's next
// write to see whether '\n' follows; a '\n' right after it is skipped then.
type lineSplitter struct{ skipLF bool }

func (l *lineSplitter) split(data []byte, atEOF bool) (int, []byte, error) {
	// The '\n' is skipped within this call, not by returning no token: a
	// Scanner given no token reads more input first, which held a complete
	// event until the server wrote again, and lost the rest of the buffer
	// when that read was the last.
	skip := 0
	if l.skipLF && len(data) > 0 {
		l.skipLF = false
		if data[0] == '\n' {
			skip, data = 1, data[1:]
		}
	}
	adv, tok, err := l.line(data, atEOF)
	if adv == 0 && tok == nil && skip > 0 && !atEOF {
		// Nothing more to split yet: the skipped '\n' must stay skipped.
		l.skipLF = true
		return 0, nil, err
	}
	return adv + skip, tok, err
}

// line splits one line off data (after a '\n' the previous line's '\r'
// owned was skipped).
func (l *lineSplitter) line(data []byte, atEOF bool) (int, []byte, error) {
	i := bytes.IndexAny(data, "\r\n")
	switch {
	case i < 0:
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	case data[i] == '\n':
		return i + 1, data[:i], nil
	case i+1 < len(data):
		if data[i+1] == '\n' {
			return i + 2, data[:i], nil
		}
		return i + 1, data[:i], nil
	}
	// A '\r' at the end of what has arrived.
	l.skipLF = true
	return i + 1, data[:i], nil
}

// Usage is the token accounting a server sends in its last chunk when asked
// with stream_options.include_usage.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// chunk is the part of a chat.completion.chunk or text_completion chunk the
// bench reads.
type chunk struct {
	Choices []struct {
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
			Reasoning        string `json:"reasoning"`
		} `json:"delta"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *Usage          `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// apiError is the error object of OpenAI-compatible servers, as the body of
// a non-200 response or inside a stream: {"error": {"type", "message"}}, or
// {"error": "message"} from some.
type apiError struct {
	Type    string
	Code    string
	Message string
}

// parseAPIError reads the error in body, best effort; the zero value when
// there is none.
func parseAPIError(body []byte) apiError {
	var outer struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &outer) != nil || len(outer.Error) == 0 {
		return apiError{}
	}
	return parseErrorField(outer.Error)
}

func parseErrorField(raw json.RawMessage) apiError {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return apiError{Message: s}
	}
	var e struct {
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return apiError{}
	}
	code := string(bytes.Trim(e.Code, `"`))
	if code == "null" {
		code = ""
	}
	return apiError{Type: e.Type, Code: code, Message: e.Message}
}

// streamResult is what one response stream carried.
type streamResult struct {
	Times  []time.Time // arrival of each chunk that carried output text
	Text   []byte      // the answer's content (not reasoning), for sessions
	Usage  *Usage
	Finish string // the last finish_reason
	Done   bool   // saw data: [DONE]
	Err    apiError
}

// readStream reads an OpenAI streaming response body until [DONE] or the end
// of input, stamping each chunk with output text by now(). It returns what
// it read so far with ErrMalformedStream (bad SSE or JSON), ErrServerError
// (an error object or event), ErrTruncated (no [DONE] and no finish_reason)
// or a read error.
func readStream(r io.Reader, now func() time.Time) (streamResult, error) {
	var (
		res streamResult
		er  = NewEventReader(r)
	)
	for {
		ev, err := er.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, err
		}
		if bytes.Equal(bytes.TrimSpace(ev.Data), []byte("[DONE]")) {
			res.Done = true
			return res, nil
		}
		var c chunk
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			if ev.Name == "error" {
				res.Err = apiError{Message: string(ev.Data)}
				return res, fmt.Errorf("%w: %s", ErrServerError, truncate(string(ev.Data), 200))
			}
			return res, fmt.Errorf("%w: chunk is not JSON: %v", ErrMalformedStream, err)
		}
		if len(c.Error) > 0 && string(c.Error) != "null" || ev.Name == "error" {
			if len(c.Error) > 0 && string(c.Error) != "null" {
				res.Err = parseErrorField(c.Error)
			} else {
				res.Err = parseErrorField(ev.Data) // the event's data is the error object
			}
			return res, fmt.Errorf("%w: %s %s", ErrServerError, res.Err.Type, truncate(res.Err.Message, 200))
		}
		output := false
		for _, ch := range c.Choices {
			d := ch.Delta
			if d.Content != "" || ch.Text != "" || d.ReasoningContent != "" || d.Reasoning != "" {
				output = true
			}
			res.Text = append(res.Text, d.Content...)
			res.Text = append(res.Text, ch.Text...)
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				res.Finish = *ch.FinishReason
			}
		}
		if output {
			res.Times = append(res.Times, now())
		}
		if c.Usage != nil {
			u := *c.Usage
			res.Usage = &u
		}
	}
	if res.Finish == "" {
		return res, fmt.Errorf("%w: no [DONE] and no finish_reason after %d output chunks", ErrTruncated, len(res.Times))
	}
	return res, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
