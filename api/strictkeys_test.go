package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Keys match fields exactly: one that names a field only up to case is an
// unknown key, ignored, and never overrides the field (encoding/json alone
// matches them without regard to case).
func TestDropMiscased(t *testing.T) {
	ct := reflect.TypeFor[chatRequest]()
	for _, c := range []struct{ in, want string }{
		{`{"model":"m","max_tokens":2,"Max_tokens":-1}`, `{"model":"m","max_tokens":2,"~Max_tokens":-1}`},
		{`{"MODEL":"m", "Stream" : true}`, `{"~MODEL":"m", "~Stream" : true}`},
		{`{"model":"m","messages":[{"ROLE":"user","content":"hi"},{"role":"user","Content":"x","content":"y"}]}`,
			`{"model":"m","messages":[{"~ROLE":"user","content":"hi"},{"role":"user","~Content":"x","content":"y"}]}`},
		{`{"stream_options":{"Include_Usage":true,"include_usage":false}}`, `{"stream_options":{"~Include_Usage":true,"include_usage":false}}`},
		{`{"response_format":{"TYPE":"json_object"}}`, `{"response_format":{"~TYPE":"json_object"}}`},
		{`{"max\u005fTokens":3,"seed":1}`, `{"~max\u005fTokens":3,"seed":1}`},
		{`{"top_\u212a":5}`, `{"~top_\u212a":5}`},                                             // the Kelvin sign folds to k
		{`{"logit_bias":{"Model":1},"Model":"x"}`, `{"logit_bias":{"Model":1},"~Model":"x"}`}, // a map's keys are its own
	} {
		if got := string(dropMiscased([]byte(c.in), ct)); got != c.want {
			t.Errorf("dropMiscased(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	// Renamed, a key is unknown to the decoder, and duplicates of the
	// fields still merge as encoding/json merges them.
	dup := `{"stream_options":{"include_usage":true},"stream_options":{},"logit_bias":{"1":5},"logit_bias":{"2":3}}`
	var plain, renamed chatRequest
	json.Unmarshal([]byte(dup), &plain)
	json.Unmarshal(dropMiscased([]byte(dup[:len(dup)-1]+`,"USER":"x"}`), ct), &renamed)
	if !reflect.DeepEqual(plain, renamed) || renamed.User != "" {
		t.Errorf("with a miscased key beside duplicates: %+v, want %+v", renamed, plain)
	}
	// Bodies without such keys come back as they are: the same bytes,
	// formatting and key order included, with no second decode.
	for _, in := range []string{
		`{"model":"M","prompt":"Max_Tokens: The PROMPT","max_tokens":2}`,
		`{"model":"m","max\u005ftokens":2, "user" : "A:B"}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Role: x"}]}],"Unknown":1}`,
		`{"model":`, // not JSON: the decoder says so
		`"\"Model\":"`,
	} {
		if got := dropMiscased([]byte(in), ct); string(got) != in {
			t.Errorf("dropMiscased(%s) = %s, want it unchanged", in, got)
		}
	}
}

func TestMiscasedKeysIgnored(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	resp, body := f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi","max_tokens":2,"Max_tokens":-1,"ignore_eos":true}`, f.id))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"completion_tokens":2`) {
		t.Fatalf("a miscased duplicate of max_tokens: %d %s", resp.StatusCode, body)
	}
	resp, body = f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"MODEL":%q,"PROMPT":"hi"}`, f.id))
	checkError(t, resp, body, 400, "invalid_request_error", "", "model")
	resp, body = f.do(t, "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"ROLE":"user","content":"hi"}]}`, f.id))
	checkError(t, resp, body, 400, "invalid_request_error", "", "messages[0].role")
	resp, body = f.do(t, "POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":[{"TYPE":"text","text":"a"}]}]}`, f.id))
	checkError(t, resp, body, 400, "invalid_request_error", "", "messages[0].content")
}

func BenchmarkDropMiscased(b *testing.B) {
	ct := reflect.TypeFor[chatRequest]()
	long := strings.Repeat("The Quick Brown Fox: ", 5000)
	for name, body := range map[string]string{
		"small": `{"model":"m","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Hi: there"}],"max_tokens":64,"temperature":0.7,"stream":true}`,
		"100KB": fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":%q}],"max_tokens":64}`, long),
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				dropMiscased([]byte(body), ct)
			}
		})
	}
}

// FuzzDropMiscased: whatever the body, dropMiscased returns it unchanged or
// valid JSON, and dropping again changes nothing more.
func FuzzDropMiscased(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","max_tokens":2,"Max_tokens":-1}`,
		`{"model":"m","messages":[{"ROLE":"user","content":[{"TYPE":"text","text":"a"}]}],"Stream_Options":{"include_usage":true}}`,
		`{"max\u005fTokens":3,"logit_bias":{"Model":1}}`, `{"a":"\"Model\":"}`, `[{"Model":1}]`,
	} {
		f.Add([]byte(s))
	}
	ct := reflect.TypeFor[chatRequest]()
	f.Fuzz(func(t *testing.T, body []byte) {
		out := dropMiscased(body, ct)
		if string(out) != string(body) && !json.Valid(out) {
			t.Fatalf("dropMiscased(%q) = %q: not JSON", body, out)
		}
		if again := dropMiscased(out, ct); string(again) != string(out) {
			t.Fatalf("dropMiscased twice: %q, then %q", out, again)
		}
		var req chatRequest
		_ = json.Unmarshal(out, &req)
	})
}

// The relay's stream check reads keys as the handler's decoder does.
func TestIsStreamExactKeys(t *testing.T) {
	for body, want := range map[string]bool{
		`{"stream":true}`:                true,
		`{"stream":true,"Stream":false}`: true,
		`{"Stream":true}`:                false,
		`{"STREAM":true,"stream":false}`: false,
	} {
		if got := isStream([]byte(body)); got != want {
			t.Errorf("isStream(%s) = %v, want %v", body, got, want)
		}
	}
}
