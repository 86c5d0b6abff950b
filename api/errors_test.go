package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// errorBody is the OpenAI error shape every 4xx must have.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func checkError(t *testing.T, resp *http.Response, body []byte, status int, typ, code, param string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body is not an error object: %v: %s", err, body)
	}
	if e.Error.Message == "" || e.Error.Type != typ {
		t.Fatalf("type %q message %q, want type %q; body %s", e.Error.Type, e.Error.Message, typ, body)
	}
	if code != "" && (e.Error.Code == nil || *e.Error.Code != code) {
		t.Fatalf("code %v, want %q; body %s", e.Error.Code, code, body)
	}
	if param != "" && (e.Error.Param == nil || *e.Error.Param != param) {
		t.Fatalf("param %v, want %q; body %s", e.Error.Param, param, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	m := f.id
	chat := func(extra string) string {
		return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}]%s}`, m, extra)
	}
	long := strings.Repeat("cluster ", 400) // far more than the tiny model's 256-token context
	const inv = "invalid_request_error"
	cases := []struct {
		name, method, path, body, ctype string
		status                          int
		typ, code, param                string
	}{
		{"malformed json", "POST", "/v1/chat/completions", `{"model":`, "", 400, inv, "invalid_json", ""},
		{"not an object", "POST", "/v1/chat/completions", `[1,2]`, "", 400, inv, "invalid_json", ""},
		{"trailing garbage", "POST", "/v1/chat/completions", chat("") + "x", "", 400, inv, "invalid_json", ""},
		{"empty body", "POST", "/v1/chat/completions", ``, "", 400, inv, "", ""},
		{"wrong type max_tokens", "POST", "/v1/chat/completions", chat(`,"max_tokens":"ten"`), "", 400, inv, "", "max_tokens"},
		{"fractional max_tokens", "POST", "/v1/chat/completions", chat(`,"max_tokens":1.5`), "", 400, inv, "", "max_tokens"},
		{"seed past int64", "POST", "/v1/chat/completions", chat(`,"seed":18446744073709551615`), "", 400, inv, "", "seed"},
		{"temperature past float64", "POST", "/v1/chat/completions", chat(`,"temperature":1e400`), "", 400, inv, "", "temperature"},
		{"wrong type messages", "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":"hi"}`, m), "", 400, inv, "", "messages"},
		{"wrong type stream", "POST", "/v1/chat/completions", chat(`,"stream":"yes"`), "", 400, inv, "", "stream"},
		{"wrong type stop", "POST", "/v1/chat/completions", chat(`,"stop":42`), "", 400, inv, "", "stop"},
		{"empty stop", "POST", "/v1/chat/completions", chat(`,"stop":""`), "", 400, inv, "", "stop"},
		{"image content", "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, m), "", 400, inv, "", "messages[0].content"},
		{"text part without text", "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":[{"type":"text"}]}]}`, m), "", 400, inv, "", "messages[0].content"},
		{"missing model", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, "", 400, inv, "", "model"},
		{"unknown model", "POST", "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, "", 404, inv, "model_not_found", "model"},
		{"no messages", "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[]}`, m), "", 400, inv, "", "messages"},
		{"bad role", "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"wizard","content":"hi"}]}`, m), "", 400, inv, "", "messages[0].role"},
		{"missing content", "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user"}]}`, m), "", 400, inv, "", "messages[0].content"},
		{"template rejects roles", "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"assistant","content":"hi"}]}`, m), "", 400, inv, "", "messages"},
		{"prompt too long", "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, m, long), "", 400, inv, "context_length_exceeded", "messages"},
		{"max_tokens over context", "POST", "/v1/chat/completions", chat(`,"max_tokens":100000`), "", 400, inv, "context_length_exceeded", "max_tokens"},
		{"max_completion_tokens over context", "POST", "/v1/chat/completions", chat(`,"max_completion_tokens":100000`), "", 400, inv, "context_length_exceeded", "max_completion_tokens"},
		{"max_tokens at int64's max", "POST", "/v1/chat/completions", chat(`,"max_tokens":9223372036854775807`), "", 400, inv, "context_length_exceeded", "max_tokens"},
		{"negative max_tokens", "POST", "/v1/chat/completions", chat(`,"max_tokens":-1`), "", 400, inv, "", "max_tokens"},
		{"zero max_completion_tokens", "POST", "/v1/chat/completions", chat(`,"max_completion_tokens":0`), "", 400, inv, "", "max_completion_tokens"},
		{"temperature too high", "POST", "/v1/chat/completions", chat(`,"temperature":2.5`), "", 400, inv, "", "temperature"},
		{"temperature negative", "POST", "/v1/chat/completions", chat(`,"temperature":-0.1`), "", 400, inv, "", "temperature"},
		{"top_p over 1", "POST", "/v1/chat/completions", chat(`,"top_p":1.5`), "", 400, inv, "", "top_p"},
		{"n of 2", "POST", "/v1/chat/completions", chat(`,"n":2`), "", 400, inv, "", "n"},
		{"presence penalty", "POST", "/v1/chat/completions", chat(`,"presence_penalty":3`), "", 400, inv, "", "presence_penalty"},
		{"top_logprobs without logprobs", "POST", "/v1/chat/completions", chat(`,"top_logprobs":3`), "", 400, inv, "", "top_logprobs"},
		{"top_logprobs too many", "POST", "/v1/chat/completions", chat(`,"logprobs":true,"top_logprobs":50`), "", 400, inv, "", "top_logprobs"},
		{"stream_options without stream", "POST", "/v1/chat/completions", chat(`,"stream_options":{"include_usage":true}`), "", 400, inv, "", "stream_options"},
		{"tools", "POST", "/v1/chat/completions", chat(`,"tools":[{"type":"function"}]`), "", 400, inv, "", "tools"},
		{"logit_bias", "POST", "/v1/chat/completions", chat(`,"logit_bias":{"5":1}`), "", 400, inv, "", "logit_bias"},
		{"invalid utf-8", "POST", "/v1/chat/completions", chat("") + "\xff", "", 400, inv, "invalid_encoding", ""},
		{"invalid utf-8 in string", "POST", "/v1/chat/completions", `{"model":"` + m + `","messages":[{"role":"user","content":"a` + "\xff" + `b"}]}`, "", 400, inv, "invalid_encoding", ""},
		{"wrong content type", "POST", "/v1/chat/completions", chat(""), "text/plain", 415, inv, "unsupported_media_type", ""},
		{"form content type", "POST", "/v1/chat/completions", chat(""), "application/x-www-form-urlencoded", 415, inv, "unsupported_media_type", ""},
		{"session_id too long", "POST", "/v1/chat/completions", chat(`,"session_id":"` + strings.Repeat("s", 257) + `"`), "", 400, inv, "", "session_id"},
		{"X-Session-ID too long", "POST", "/v1/chat/completions", chat(""), "", 400, inv, "", "X-Session-ID"},
		{"huge body", "POST", "/v1/chat/completions", chat(`,"user":"` + strings.Repeat("x", 2<<20) + `"`), "", 413, inv, "request_too_large", ""},
		{"unknown route", "GET", "/v1/nope", "", "", 404, inv, "not_found", ""},
		{"unknown root route", "GET", "/nope", "", "", 404, inv, "not_found", ""},
		{"wrong method chat", "GET", "/v1/chat/completions", "", "", 405, inv, "method_not_allowed", ""},
		{"wrong method models", "POST", "/v1/models", "{}", "", 405, inv, "method_not_allowed", ""},
		{"wrong method health", "DELETE", "/health", "", "", 405, inv, "method_not_allowed", ""},
		{"completion no prompt", "POST", "/v1/completions", fmt.Sprintf(`{"model":%q}`, m), "", 400, inv, "", "prompt"},
		{"completion two prompts", "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":["a","b"]}`, m), "", 400, inv, "", "prompt"},
		{"completion bad prompt type", "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":{"a":1}}`, m), "", 400, inv, "", "prompt"},
		{"completion token out of vocab", "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":[1,999999]}`, m), "", 400, inv, "", "prompt"},
		{"completion token past int32", "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":[1,1099511627776]}`, m), "", 400, inv, "", "prompt"},
		{"completion logprobs too many", "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"a","logprobs":21}`, m), "", 400, inv, "", "logprobs"},
		{"completion echo", "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"a","echo":true}`, m), "", 400, inv, "", "echo"},
		{"completion prompt too long", "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":%q}`, m, long), "", 400, inv, "context_length_exceeded", "prompt"},
		{"embedding empty input", "POST", "/v1/embeddings", fmt.Sprintf(`{"model":%q,"input":""}`, m), "", 400, inv, "", "input"},
		{"embedding no input", "POST", "/v1/embeddings", fmt.Sprintf(`{"model":%q}`, m), "", 400, inv, "", "input"},
		{"embedding bad input", "POST", "/v1/embeddings", fmt.Sprintf(`{"model":%q,"input":true}`, m), "", 400, inv, "", "input"},
		{"embedding bad format", "POST", "/v1/embeddings", fmt.Sprintf(`{"model":%q,"input":"a","encoding_format":"hex"}`, m), "", 400, inv, "", "encoding_format"},
		{"embedding too long", "POST", "/v1/embeddings", fmt.Sprintf(`{"model":%q,"input":%q}`, m, long), "", 400, inv, "context_length_exceeded", "input"},
		{"embedding unknown model", "POST", "/v1/embeddings", `{"model":"ada","input":"a"}`, "", 404, inv, "model_not_found", "model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			if c.ctype != "" {
				hdr = []string{"Content-Type", c.ctype}
			}
			if c.param == "X-Session-ID" {
				hdr = append(hdr, "X-Session-ID", strings.Repeat("s", 257))
			}
			resp, body := f.do(t, c.method, c.path, c.body, hdr...)
			checkError(t, resp, body, c.status, c.typ, c.code, c.param)
		})
	}
	// None of it reached the engine or left anything running.
	if s := f.eng.Stats(); s.Running != 0 || s.Waiting != 0 {
		t.Fatalf("engine busy after bad input: %+v", s)
	}
}

// A text content part without its text is reported as that, not as an
// unsupported type; every part error names the part.
func TestContentPartErrors(t *testing.T) {
	for body, want := range map[string]string{
		`[{"type":"text"}]`: `part 0 (type "text") has no text string`,
		`[{"type":"text","text":"a"},{"type":"text","text":null}]`: `part 1 (type "text") has no text string`,
		`[{"type":"image_url"}]`:                                   `part 0: type "image_url" is not supported`,
		`[null]`:                                                   `part 0 must be an object`,
		`["hi"]`:                                                   `part 0 must be an object`,
		`[{"text":"a"}]`:                                           `part 0 has no type`,
		`[{"type":"text","text":5}]`:                               `part 0: text must be a string, not number`,
		`[{"type":5,"text":"x"}]`:                                  `part 0: type must be a string, not number`,
	} {
		var c messageContent
		if err := c.UnmarshalJSON([]byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", body, err, want)
		}
	}
}

// An error inside a message names the message: param messages[1].content,
// not messages.
func TestMessageErrorsNameTheMessage(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	for _, c := range []struct{ messages, param, msg string }{
		{`[{"role":"user","content":"hi"},{"role":"user","content":123}]`, "messages[1].content", "must be a string or an array of content parts"},
		{`[{"role":"user","content":["hi"]}]`, "messages[0].content", "part 0 must be an object"},
		{`[{"role":"user","content":"hi"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]`, "messages[1].content", `part 0: type "image_url" is not supported`},
		{`[{"role":5,"content":"hi"}]`, "messages[0].role", "must be a string, not number"},
		{`[{"role":"user","content":"hi"},"hello"]`, "messages[1]", "must be an object"},
		{`[{"role":"user","content":"hi"},null]`, "messages[1]", "must be an object"},
		{`[{"role":"user","content":"hi"},{}]`, "messages[1].role", "is missing"},
		{`[{"role":"user","content":"hi","name":[1]}]`, "messages[0].name", "must be a string"},
		{`{"role":"user"}`, "messages", "must be an array of messages"},
	} {
		resp, body := f.do(t, "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":%s}`, f.id, c.messages))
		checkError(t, resp, body, 400, "invalid_request_error", "", c.param)
		var e errorBody
		if json.Unmarshal(body, &e); !strings.Contains(e.Error.Message, c.msg) {
			t.Errorf("%s: %s, want a message containing %q", c.messages, body, c.msg)
		}
	}
}

// A value of the wrong type is echoed in the error, clipped: a 5,000-digit
// max_tokens does not come back whole.
func TestWrongTypeValueClipped(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	big := strings.Repeat("9", 5000)
	resp, body := f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":%s}`, f.id, big))
	checkError(t, resp, body, 400, "invalid_request_error", "", "max_tokens")
	if len(body) > 500 || !strings.Contains(string(body), "…") {
		t.Errorf("error body of %d bytes, want the value clipped: %.200s", len(body), body)
	}
	// Every other error that echoes what the client sent clips it too.
	long := strings.Repeat("x", 5000)
	for _, c := range []struct {
		name, path, body, ctype string
		status                  int
		param                   string
	}{
		{"role", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":%q,"content":"hi"}]}`, f.id, long), "", 400, "messages[0].role"},
		{"content part type", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":[{"type":%q}]}]}`, f.id, long), "", 400, "messages[0].content"},
		{"response_format", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"response_format":{"type":%q}}`, f.id, long), "", 400, "response_format"},
		{"model", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi"}`, long), "", 404, "model"},
		{"content type", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi"}`, f.id), "text/" + long, 415, ""},
	} {
		var hdr []string
		if c.ctype != "" {
			hdr = []string{"Content-Type", c.ctype}
		}
		resp, body := f.do(t, "POST", c.path, c.body, hdr...)
		checkError(t, resp, body, c.status, "invalid_request_error", "", c.param)
		if len(body) > 500 || !strings.Contains(string(body), "…") {
			t.Errorf("%s: error body of %d bytes, want the value clipped: %.200s", c.name, len(body), body)
		}
	}
}

// A number that does not fit its field is said to be out of range, not to
// be of the wrong kind ("seed must be an integer, not number 2⁶⁴").
func TestOutOfRangeNumbers(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	for field, c := range map[string]struct{ value, want string }{
		"seed":        {"18446744073709551615", "seed is out of range: 18446744073709551615 does not fit in a 64-bit integer"},
		"max_tokens":  {"9223372036854775808", "max_tokens is out of range: 9223372036854775808 does not fit in a 64-bit integer"},
		"temperature": {"1e400", "temperature is out of range: 1e400 is not a finite 64-bit number"},
		"top_k":       {"1.5", "top_k must be an integer, not number 1.5"},
	} {
		resp, body := f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi",%q:%s}`, f.id, field, c.value))
		checkError(t, resp, body, 400, "invalid_request_error", "", field)
		var e errorBody
		if json.Unmarshal(body, &e); e.Error.Message != c.want {
			t.Errorf("%s %s: %q, want %q", field, c.value, e.Error.Message, c.want)
		}
	}
}

// A prompt that fills the whole context is refused with a message that says
// there is no room left for a completion, not only that it is as long as
// the context.
func TestPromptFillsContext(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	n := f.srv.info.Context
	ids := strings.TrimSuffix(strings.Repeat("5,", n), ",")
	resp, body := f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":[%s]}`, f.id, ids))
	checkError(t, resp, body, 400, "invalid_request_error", "context_length_exceeded", "prompt")
	var e errorBody
	if json.Unmarshal(body, &e); !strings.Contains(e.Error.Message, "no room for a completion") || !strings.Contains(e.Error.Message, fmt.Sprintf("at most %d prompt tokens", n-1)) {
		t.Errorf("message %q", e.Error.Message)
	}
	// One token fewer leaves room for one.
	ids = strings.TrimSuffix(strings.Repeat("5,", n-1), ",")
	if resp, body := f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":[%s],"max_tokens":1}`, f.id, ids)); resp.StatusCode != 200 {
		t.Errorf("%d prompt tokens and 1 to generate: %d %s", n-1, resp.StatusCode, body)
	}
}
