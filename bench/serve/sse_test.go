package serve

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestEventReader(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // "name|data"
	}{
		{"one", "data: a\n\n", []string{"|a"}},
		{"no space", "data:a\n\n", []string{"|a"}},
		{"two spaces keep one", "data:  a\n\n", []string{"| a"}},
		{"multi-line", "data: a\ndata: b\n\n", []string{"|a\nb"}},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"|a", "|b"}},
		{"cr", "data: a\r\rdata: b\r\r", []string{"|a", "|b"}},
		{"comments and ids", ": ping\nid: 3\nretry: 10\ndata: a\n\n", []string{"|a"}},
		{"event name", "event: error\ndata: x\n\ndata: y\n\n", []string{"error|x", "|y"}},
		{"name without data is dropped", "event: ping\n\ndata: y\n\n", []string{"|y"}},
		{"blank lines only", "\n\n\n", nil},
		{"empty data", "data\n\n", []string{"|"}},
		{"pending at EOF", "data: [DONE]\n", []string{"|[DONE]"}},
		{"llama.cpp error line", "data: a\n\nerror: {\"code\":500}\n\ndata: [DONE]\n\n", []string{"|a", `error|{"code":500}`, "|[DONE]"}},
		{"cr then lf in the next read", "data: a\r\n\r\n", []string{"|a"}},
		{"pending at EOF, no newline", "data: [DONE]", []string{"|[DONE]"}},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte at a time as well, to split "\r\n" across reads.
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				er := NewEventReader(r)
				var got []string
				for {
					ev, err := er.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, ev.Name+"|"+string(ev.Data))
				}
				if strings.Join(got, "¶") != strings.Join(tc.want, "¶") {
					t.Errorf("events %q, want %q", got, tc.want)
				}
			}
		})
	}
}

// TestEventReaderBareCR: an event whose lines end in a bare '\r' is
// dispatched when its blank line arrives, not held until the server writes
// again (every event was stamped one write late).
func TestEventReaderBareCR(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	got := make(chan string)
	go func() {
		er := NewEventReader(pr)
		for {
			ev, err := er.Next()
			if err != nil {
				close(got)
				return
			}
			got <- string(ev.Data)
		}
	}()
	go pw.Write([]byte("data: a\r\r"))
	select {
	case d := <-got:
		if d != "a" {
			t.Fatalf("event %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event waited for the next write")
	}
	go func() { pw.Write([]byte("\ndata: b\r\r")); pw.Close() }()
	if d := <-got; d != "b" {
		t.Fatalf("second event %q", d)
	}
}

func TestEventReaderLongLine(t *testing.T) {
	in := "data: " + strings.Repeat("x", MaxEventLine+1) + "\n\n"
	if _, err := NewEventReader(strings.NewReader(in)).Next(); !errors.Is(err, ErrMalformedStream) {
		t.Errorf("err %v, want ErrMalformedStream", err)
	}
}

// tick is a clock that advances 1ms per call.
func tick() func() time.Time {
	t := time.Unix(0, 0)
	return func() time.Time { t = t.Add(time.Millisecond); return t }
}

func TestReadStream(t *testing.T) {
	const (
		role   = `data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n"
		hello  = `data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}` + "\n\n"
		world  = `data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}` + "\n\n"
		finish = `data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}` + "\n\n"
		usage  = `data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}` + "\n\n"
		done   = "data: [DONE]\n\n"
	)
	for _, tc := range []struct {
		name     string
		in       string
		err      error
		chunks   int
		text     string
		finish   string
		usage    bool
		done     bool
		errType  string
		errInErr string
	}{
		{name: "chat", in: role + hello + world + finish + usage + done, chunks: 2, text: "Hello", finish: "length", usage: true, done: true},
		{name: "completions", in: `data: {"choices":[{"text":"a"}]}` + "\n\n" + `data: {"choices":[{"text":"b","finish_reason":"stop"}]}` + "\n\n" + done, chunks: 2, text: "ab", finish: "stop", done: true},
		{name: "reasoning counts as output, not text", in: `data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}` + "\n\n" + hello + done, chunks: 2, text: "Hel", done: true},
		{name: "no DONE but finished", in: hello + finish, chunks: 1, text: "Hel", finish: "length"},
		{name: "keep-alive comments", in: ": keep-alive\n\n" + hello + ": ping\n\n" + finish + done, chunks: 1, text: "Hel", finish: "length", done: true},
		{name: "nothing after DONE is read", in: hello + done + "data: {bad\n\n", chunks: 1, text: "Hel", done: true},
		{name: "truncated", in: role + hello, err: ErrTruncated, chunks: 1, text: "Hel"},
		{name: "empty", in: "", err: ErrTruncated},
		{name: "bad JSON", in: hello + "data: {\"choices\":[\n\n", err: ErrMalformedStream, chunks: 1, text: "Hel"},
		{name: "not SSE at all", in: "<html>502 Bad Gateway</html>", err: ErrTruncated},
		{name: "JSON not an object", in: "data: [1,2]\n\n", err: ErrMalformedStream},
		{name: "wrong types", in: `data: {"choices":[{"delta":{"content":5}}]}` + "\n\n", err: ErrMalformedStream},
		{name: "error object", in: hello + `data: {"error":{"type":"kv_cache_full","message":"no room","code":507}}` + "\n\n", err: ErrServerError, chunks: 1, text: "Hel", errType: "kv_cache_full"},
		{name: "error string", in: `data: {"error":"boom"}` + "\n\n", err: ErrServerError, errInErr: "boom"},
		{name: "error event", in: "event: error\ndata: overloaded\n\n", err: ErrServerError, errInErr: "overloaded"},
		// Older llama.cpp servers: a bare "error:" field, then [DONE]; it was
		// dropped, and the failed request counted as completed.
		{name: "llama.cpp error field", in: hello + `error: {"code":500,"message":"KV cache is full","type":"server_error"}` + "\n\n" + done,
			err: ErrServerError, chunks: 1, text: "Hel", errType: "server_error", errInErr: "KV cache is full"},
		{name: "null error is none", in: `data: {"error":null,"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}` + "\n\n" + done, chunks: 1, text: "x", finish: "stop", done: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := readStream(strings.NewReader(tc.in), tick())
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if len(res.Times) != tc.chunks || string(res.Text) != tc.text || res.Finish != tc.finish ||
				(res.Usage != nil) != tc.usage || res.Done != tc.done || res.Err.Type != tc.errType {
				t.Errorf("got %d chunks, text %q, finish %q, usage %v, done %v, error %+v", len(res.Times), res.Text, res.Finish, res.Usage, res.Done, res.Err)
			}
			if tc.errInErr != "" && (err == nil || !strings.Contains(err.Error(), tc.errInErr)) {
				t.Errorf("err %v, want it to mention %q", err, tc.errInErr)
			}
			for i := 1; i < len(res.Times); i++ {
				if !res.Times[i].After(res.Times[i-1]) {
					t.Error("times out of order")
				}
			}
		})
	}
}

func TestReadStreamReadError(t *testing.T) {
	boom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader(`data: {"choices":[{"delta":{"content":"a"}}]}`+"\n\n"), iotest.ErrReader(boom))
	res, err := readStream(r, tick())
	if !errors.Is(err, boom) || len(res.Times) != 1 {
		t.Errorf("err %v, %d chunks", err, len(res.Times))
	}
	if k := errorKind(err, 200); k != "connection" {
		t.Errorf("kind %q", k)
	}
}

func TestParseAPIError(t *testing.T) {
	for _, tc := range []struct {
		body string
		want apiError
	}{
		{`{"error":{"type":"overloaded","message":"busy","code":null}}`, apiError{Type: "overloaded", Message: "busy"}},
		{`{"error":{"message":"m","code":"rate_limit"}}`, apiError{Code: "rate_limit", Message: "m"}},
		{`{"error":{"message":"m","code":429}}`, apiError{Code: "429", Message: "m"}},
		{`{"error":"plain"}`, apiError{Message: "plain"}},
		{`{"detail":"vLLM style"}`, apiError{}},
		{`not json`, apiError{}},
		{`{"error":[1]}`, apiError{}},
	} {
		if got := parseAPIError([]byte(tc.body)); got != tc.want {
			t.Errorf("parseAPIError(%s) = %+v, want %+v", tc.body, got, tc.want)
		}
	}
}

// FuzzReadStream feeds arbitrary bytes to the stream reader: it must not
// panic, and what it returns must be consistent.
func FuzzReadStream(f *testing.F) {
	for _, s := range []string{
		"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n",
		"data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1}}\r\n\r\n",
		"event: error\ndata: {\"error\":{\"type\":\"x\"}}\n\n",
		"data: {\"choices\":[\n\n",
		": c\r\rdata:\rdata: [DONE]",
		"data: {\"error\":\"s\"}\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		res, err := readStream(strings.NewReader(string(in)), tick())
		if err == nil && !res.Done && res.Finish == "" {
			t.Fatal("a stream with neither [DONE] nor finish_reason was accepted")
		}
		if err != nil && !errors.Is(err, ErrMalformedStream) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrServerError) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		var r Result
		measure(&r, res, time.Unix(0, 0), time.Unix(1, 0))
		if r.Chunks != len(res.Times) || r.TTFTMs < 0 || len(r.ITLMs) != max(0, r.Chunks-1) {
			t.Fatalf("measure: %+v", r)
		}
	})
}

// chunkReader returns one chunk per Read, the last together with io.EOF, as
// net/http does for a body with a Content-Length.
type chunkReader struct{ chunks []string }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return n, io.EOF
	}
	return n, nil
}

func readEvents(t *testing.T, r io.Reader) []string {
	t.Helper()
	er := NewEventReader(r)
	var got []string
	for {
		ev, err := er.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Name+"|"+string(ev.Data))
	}
}

// TestEventReaderSplitAnywhere: random event streams with every line ending
// give the same events read whole and read in pieces split anywhere, most
// often right after a '\r' (a "\r\n" across two reads held the event until
// the next write, or lost the rest of the stream when the second read was
// the last).
func TestEventReaderSplitAnywhere(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	endings := []string{"\n", "\r", "\r\n"}
	for range 2000 {
		var b strings.Builder
		for range 1 + r.IntN(8) {
			switch r.IntN(5) {
			case 0:
				b.WriteString(": c")
			case 1:
				b.WriteString("event: x")
			case 2:
				b.WriteString("")
			default:
				fmt.Fprintf(&b, "data: %d", r.IntN(100))
			}
			b.WriteString(endings[r.IntN(3)])
		}
		in := b.String()
		var cuts []int
		for i := 1; i < len(in); i++ {
			if in[i-1] == '\r' && r.IntN(2) == 0 || r.IntN(10) == 0 {
				cuts = append(cuts, i)
			}
		}
		var chunks []string
		prev := 0
		for _, c := range cuts {
			chunks = append(chunks, in[prev:c])
			prev = c
		}
		chunks = append(chunks, in[prev:])
		whole := readEvents(t, strings.NewReader(in))
		split := readEvents(t, &chunkReader{chunks: slices.Clone(chunks)})
		if strings.Join(whole, "¶") != strings.Join(split, "¶") {
			t.Fatalf("%q: whole %q, read as %q: %q", in, whole, chunks, split)
		}
	}
}

// TestEventReaderCRLFAcrossWrites: an event whose "\r\n" endings arrive
// split between two writes is dispatched once its blank line is in, not
// held until the server's next write.
func TestEventReaderCRLFAcrossWrites(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	defer pw.Close()
	got := make(chan string, 1)
	go func() {
		ev, err := NewEventReader(pr).Next()
		if err == nil {
			got <- string(ev.Data)
		}
	}()
	go func() { pw.Write([]byte("data: a\r")); pw.Write([]byte("\n\r\n")) }()
	select {
	case d := <-got:
		if d != "a" {
			t.Fatalf("event %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the complete event waited for the next write")
	}
}
