package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// These tests drive the API with the official OpenAI Go client against the
// real engine on the synthesized tiny model.

func (f *fixture) client(opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(f.http.URL + "/v1/"), option.WithAPIKey("unused"),
		option.WithHTTPClient(f.http.Client()), option.WithMaxRetries(0),
	}, opts...)...)
}

func chatParams(id, prompt string, maxTokens int64) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:     id,
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		MaxTokens: openai.Int(maxTokens),
		Seed:      openai.Int(7),
	}
}

func TestOpenAIChat(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	c := f.client()
	ctx := context.Background()
	p := chatParams(f.id, "Tell me about the cluster", 12)
	p.Temperature = openai.Float(0) // greedy: the same tokens as the engine alone
	resp, err := c.Chat.Completions.New(ctx, p, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Object != "chat.completion" || resp.Model != f.id {
		t.Fatalf("bad response: %+v", resp)
	}
	ch := resp.Choices[0]
	if ch.FinishReason != "length" || ch.Message.Role != "assistant" {
		t.Fatalf("finish %q role %q", ch.FinishReason, ch.Message.Role)
	}
	prompt, e := chatPrompt(f.tok, tokMsgs("user", "Tell me about the cluster"))
	if e != nil {
		t.Fatal(e)
	}
	if resp.Usage.PromptTokens != int64(len(prompt)) || resp.Usage.CompletionTokens != 12 ||
		resp.Usage.TotalTokens != int64(len(prompt))+12 {
		t.Fatalf("usage %+v, prompt has %d tokens", resp.Usage, len(prompt))
	}
	want := directGreedy(t, f, prompt, 12)
	if ch.Message.Content != want {
		t.Fatalf("content %q, engine alone gives %q", ch.Message.Content, want)
	}

	// Streaming gives the same text, role first, usage last.
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	st := c.Chat.Completions.NewStreaming(ctx, p, option.WithJSONSet("ignore_eos", true))
	var (
		text, role, finish string
		chunks             int
		usage              openai.CompletionUsage
	)
	for st.Next() {
		ck := st.Current()
		chunks++
		if len(ck.Choices) == 0 {
			usage = ck.Usage
			continue
		}
		if raw := ck.JSON.Usage.Raw(); raw != "null" {
			t.Fatalf("chunk %d before the usage chunk: usage %q, want null", chunks, raw)
		}
		d := ck.Choices[0]
		if d.Delta.Role != "" {
			role = d.Delta.Role
		}
		text += d.Delta.Content
		if d.FinishReason != "" {
			finish = d.FinishReason
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if text != want || role != "assistant" || finish != "length" || chunks < 3 {
		t.Fatalf("stream: text %q role %q finish %q chunks %d; want %q", text, role, finish, chunks, want)
	}
	if usage.CompletionTokens != 12 || usage.PromptTokens != int64(len(prompt)) {
		t.Fatalf("stream usage %+v", usage)
	}
}

// TestOpenAIChatSystemMessage: the tiny model's template is Mixtral's, which
// has no system role (it raises on one). A system or developer message, as
// the official client sends it, is folded into the first user turn, as
// llama.cpp's server does, so the request is served and the prompt is the
// folded user message's, token for token.
func TestOpenAIChatSystemMessage(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	c := f.client()
	if f.tok.SupportsSystemRole() {
		t.Fatal("the tiny model's template reports a system role; this test needs Mixtral's")
	}
	folded, e := chatPrompt(f.tok, tokMsgs("user", "Be brief.\nTell me about the cluster"))
	if e != nil {
		t.Fatal(e)
	}
	for name, first := range map[string]openai.ChatCompletionMessageParamUnion{
		"system":    openai.SystemMessage("Be brief."),
		"developer": openai.DeveloperMessage("Be brief."),
	} {
		t.Run(name, func(t *testing.T) {
			p := chatParams(f.id, "Tell me about the cluster", 6)
			p.Messages = append([]openai.ChatCompletionMessageParamUnion{first}, p.Messages...)
			p.Temperature = openai.Float(0)
			resp, err := c.Chat.Completions.New(context.Background(), p, option.WithJSONSet("ignore_eos", true))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Usage.PromptTokens != int64(len(folded)) {
				t.Errorf("prompt tokens %d, want the folded prompt's %d", resp.Usage.PromptTokens, len(folded))
			}
			if want := directGreedy(t, f, folded, 6); resp.Choices[0].Message.Content != want {
				t.Errorf("content %q, the engine on the folded prompt gives %q", resp.Choices[0].Message.Content, want)
			}
		})
	}
}

// directGreedy runs prompt through the engine alone, greedy, and decodes
// the tokens.
func directGreedy(t *testing.T, f *fixture, prompt []int32, n int) string {
	t.Helper()
	req := testRequest(prompt, n)
	ch, err := f.eng.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for ev := range ch {
		if ev.HasToken {
			ids = append(ids, ev.Token)
		}
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
	}
	return validText([]byte(f.tok.Decode(ids)))
}

func TestOpenAICompletions(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	c := f.client()
	ctx := context.Background()
	p := openai.CompletionNewParams{
		Model:       openai.CompletionNewParamsModel(f.id),
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("The expert router")},
		MaxTokens:   openai.Int(10),
		Temperature: openai.Float(0.9),
		Seed:        openai.Int(42),
		Logprobs:    openai.Int(3),
	}
	resp, err := c.Completions.New(ctx, p, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Object != "text_completion" {
		t.Fatalf("bad response %+v", resp)
	}
	lp := resp.Choices[0].Logprobs
	if len(lp.Tokens) != 10 || len(lp.TokenLogprobs) != 10 || len(lp.TopLogprobs) != 10 || len(lp.TextOffset) != 10 {
		t.Fatalf("logprobs: %+v", lp)
	}
	for i, l := range lp.TokenLogprobs {
		top := lp.TopLogprobs[i]
		if l > 0 || len(top) == 0 || len(top) > 4 {
			t.Fatalf("token %d: logprob %v, top %v", i, l, lp.TopLogprobs[i])
		}
		if _, ok := top[lp.Tokens[i]]; !ok {
			t.Fatalf("token %d %q is not among its top_logprobs %v", i, lp.Tokens[i], top)
		}
	}
	prompt := f.tok.Encode("The expert router", true, true)
	if resp.Usage.PromptTokens != int64(len(prompt)) || resp.Usage.CompletionTokens != 10 {
		t.Fatalf("usage %+v", resp.Usage)
	}

	// Same seed, same text; the stream agrees with the non-streaming call.
	again, err := c.Completions.New(ctx, p, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	if again.Choices[0].Text != resp.Choices[0].Text {
		t.Fatalf("seed 42 gave %q then %q", resp.Choices[0].Text, again.Choices[0].Text)
	}
	st := c.Completions.NewStreaming(ctx, p, option.WithJSONSet("ignore_eos", true))
	var text string
	for st.Next() {
		if ck := st.Current(); len(ck.Choices) > 0 {
			text += ck.Choices[0].Text
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if text != resp.Choices[0].Text {
		t.Fatalf("stream %q, non-stream %q", text, resp.Choices[0].Text)
	}
	// A different seed gives (for this model and prompt) a different text.
	p.Seed = openai.Int(43)
	other, err := c.Completions.New(ctx, p, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	if other.Choices[0].Text == resp.Choices[0].Text {
		t.Logf("seeds 42 and 43 happen to agree: %q", other.Choices[0].Text)
	}
}

func TestOpenAIStopStrings(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	c := f.client()
	ctx := context.Background()
	p := chatParams(f.id, "hello", 24)
	p.Temperature = openai.Float(0)
	full, err := c.Chat.Completions.New(ctx, p, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	text := full.Choices[0].Message.Content
	// Stop on a piece from the middle of the greedy text: the answer is the
	// text before its first occurrence, finish_reason stop.
	stop := regexp.MustCompile(`[a-z]{2}`).FindString(text[1:])
	if stop == "" {
		t.Fatalf("greedy text has no ASCII word to stop on: %q", text)
	}
	want := text[:strings.Index(text, stop)]
	p.Stop = openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\x00never", stop}}
	p.Logprobs = openai.Bool(true)
	nlp := map[bool]int{} // logprob entries per mode: both keep only tokens whose text was returned
	for _, stream := range []bool{false, true} {
		var got, finish string
		if stream {
			st := c.Chat.Completions.NewStreaming(ctx, p, option.WithJSONSet("ignore_eos", true))
			for st.Next() {
				if ck := st.Current(); len(ck.Choices) > 0 {
					nlp[stream] += len(ck.Choices[0].Logprobs.Content)
					got += ck.Choices[0].Delta.Content
					if ck.Choices[0].FinishReason != "" {
						finish = ck.Choices[0].FinishReason
					}
				}
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
		} else {
			r, err := c.Chat.Completions.New(ctx, p, option.WithJSONSet("ignore_eos", true))
			if err != nil {
				t.Fatal(err)
			}
			got, finish = r.Choices[0].Message.Content, r.Choices[0].FinishReason
			nlp[stream] = len(r.Choices[0].Logprobs.Content)
			if r.Usage.CompletionTokens >= 24 {
				t.Errorf("stop string did not end the generation early: %d tokens", r.Usage.CompletionTokens)
			}
		}
		if got != want || finish != "stop" {
			t.Errorf("stream=%v: got %q finish %q; want %q stop (stop string %q in %q)", stream, got, finish, want, stop, text)
		}
	}
	if nlp[false] == 0 || nlp[true] != nlp[false] {
		t.Errorf("logprob entries: %d streaming, %d not; want the same, non-zero", nlp[true], nlp[false])
	}
	// The engine ends the cancelled sequences: nothing stays running.
	waitFor(t, "engine idle", func() bool { s := f.eng.Stats(); return s.Running == 0 && s.Waiting == 0 })
}

func TestOpenAIChatLogprobs(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	c := f.client()
	p := chatParams(f.id, "memory and experts", 6)
	p.Logprobs = openai.Bool(true)
	p.TopLogprobs = openai.Int(2)
	resp, err := c.Chat.Completions.New(context.Background(), p, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	lp := resp.Choices[0].Logprobs.Content
	if len(lp) != 6 {
		t.Fatalf("%d logprob entries, want 6", len(lp))
	}
	var joined string
	for _, e := range lp {
		if e.Logprob > 0 || len(e.TopLogprobs) != 2 || e.TopLogprobs[0].Logprob < e.TopLogprobs[1].Logprob {
			t.Fatalf("entry %+v", e)
		}
		joined += string(intsToBytes(e.Bytes))
	}
	if validText([]byte(joined)) != resp.Choices[0].Message.Content {
		t.Fatalf("logprob bytes %q != content %q", joined, resp.Choices[0].Message.Content)
	}
}

func intsToBytes(v []int64) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

func TestOpenAIEmbeddingsAndModels(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	c := f.client()
	ctx := context.Background()
	models, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(models.Data) != 1 || models.Data[0].ID != f.id || models.Data[0].OwnedBy != "conclave" {
		t.Fatalf("models %+v", models.Data)
	}
	m, err := c.Models.Get(ctx, f.id)
	if err != nil || m.ID != f.id {
		t.Fatalf("model %+v, %v", m, err)
	}
	_, err = c.Models.Get(ctx, "gpt-4")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" {
		t.Fatalf("unknown model: %v", err)
	}

	w, _, _ := tinyModel(t)
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{"", openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model:          openai.EmbeddingModel(f.id),
			Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"hello cluster", "the expert"}},
			EncodingFormat: format,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(emb.Data) != 2 || len(emb.Data[0].Embedding) != w.Dim || emb.Data[1].Index != 1 {
			t.Fatalf("%q: %d embeddings of %d floats", format, len(emb.Data), len(emb.Data[0].Embedding))
		}
		n := len(f.tok.Encode("hello cluster", true, false)) + len(f.tok.Encode("the expert", true, false))
		if emb.Usage.PromptTokens != int64(n) || emb.Usage.TotalTokens != int64(n) {
			t.Fatalf("usage %+v, want %d", emb.Usage, n)
		}
		direct, err := f.eng.Embed(ctx, f.tok.Encode("hello cluster", true, false))
		if err != nil {
			t.Fatal(err)
		}
		for i := range direct {
			if float32(emb.Data[0].Embedding[i]) != direct[i] {
				t.Fatalf("%q: component %d is %v, engine gives %v", format, i, emb.Data[0].Embedding[i], direct[i])
			}
		}
	}
}

// TestTopPZeroIsGreedy: top_p 0 keeps the most probable token alone, so
// every seed gives the greedy text (the sampler itself reads TopP 0 as off).
func TestTopPZeroIsGreedy(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	text := func(extra string) string {
		t.Helper()
		resp, body := f.do(t, "POST", "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hello","max_tokens":12,"ignore_eos":true%s}`, f.id, extra))
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", extra, resp.StatusCode, body)
		}
		var out struct {
			Choices []struct{ Text string } `json:"choices"`
		}
		if err := json.Unmarshal(body, &out); err != nil || len(out.Choices) != 1 {
			t.Fatalf("%s: %v %s", extra, err, body)
		}
		return out.Choices[0].Text
	}
	greedy := text(`,"temperature":0`)
	distinct := map[string]bool{}
	for seed := 1; seed <= 4; seed++ {
		if got := text(fmt.Sprintf(`,"top_p":0,"seed":%d`, seed)); got != greedy {
			t.Errorf("top_p 0, seed %d: %q; greedy %q", seed, got, greedy)
		}
		distinct[text(fmt.Sprintf(`,"top_p":1,"seed":%d`, seed))] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("top_p 1 gave one text for four seeds: the check above cannot tell greedy from sampling")
	}
}

// TestTextOffsetCharacters: legacy text_offset counts characters of the
// returned text, so a token holding "é" advances it by one, not by its two
// bytes; the byte tokens of one character count it once (a token that
// continues it gets its offset), and a character cut short counts a U+FFFD
// per byte, as the text has them. The test vocabulary has no multi-byte
// character, so a stand-in gives the tokens' bytes. A stream's offsets equal
// the response's.
func TestTextOffsetCharacters(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	texts := map[int32]string{1: "é", 2: "ab", 3: "\xe2\x82", 4: "\xac", 5: "\xe2", 6: "\x82", 7: "\xe9", 8: "\x90", 9: "Q"} // 3+4, 5+6+4: "€"
	bytesOf := func(id int32) []byte { return []byte(texts[id]) }
	for _, c := range []struct {
		toks []int32
		want []int
		text string // the tokens' text, as validText writes it
	}{
		{[]int32{1, 2, 3, 1}, []int{5, 6, 8, 10}, "éab\uFFFD\uFFFDé"},
		{[]int32{1, 2, 3, 4, 2, 1}, []int{5, 6, 8, 8, 9, 11}, "éab€abé"},
		{[]int32{5, 6, 4, 1, 5, 2}, []int{5, 5, 5, 6, 7, 8}, "€é\uFFFDab"},
		{[]int32{4, 4, 1}, []int{5, 6, 7}, "\uFFFD\uFFFDé"},
		{[]int32{7, 8, 9}, []int{5, 6, 7}, "\uFFFD\uFFFDQ"}, // a lead byte, a continuation, then no character
		{[]int32{2, 5}, []int{5, 7}, "ab\uFFFD"},            // the end: the last flush writes the lone lead byte
	} {
		lps := make([]tokenLogprob, len(c.toks))
		var all []byte
		for i, id := range c.toks {
			lps[i] = tokenLogprob{token: id}
			all = append(all, texts[id]...)
		}
		lp := completionLogprobsOf(bytesOf, lps, &textOffsets{runes: 5}, true)
		if !slices.Equal(lp.TextOffset, c.want) {
			t.Errorf("%v: offsets %v, want %v", c.toks, lp.TextOffset, c.want)
		}
		if got := validText(all); got != c.text {
			t.Errorf("%v: text %q, want %q", c.toks, got, c.text)
		}
		// One token a batch, as a stream whose text goes out token by
		// token: the same, but where a character was still open when its
		// batch went out.
		var off textOffsets
		off.runes = 5
		var got []int
		for i, l := range lps {
			got = append(got, completionLogprobsOf(bytesOf, []tokenLogprob{l}, &off, i == len(lps)-1).TextOffset...)
		}
		if slices.Equal(c.toks, []int32{7, 8, 9}) {
			c.want = []int{5, 5, 7} // \x90 went out while \xe9 might still have begun a character
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%v one by one: offsets %v, want %v", c.toks, got, c.want)
		}
	}

	body := func(stream bool) string {
		return fmt.Sprintf(`{"model":%q,"prompt":"hello","max_tokens":16,"temperature":0.8,"seed":3,"logprobs":1,"ignore_eos":true,"stream":%v}`, f.id, stream)
	}
	_, b := f.do(t, "POST", "/v1/completions", body(false))
	var whole struct {
		Choices []struct {
			Logprobs struct {
				TextOffset []int `json:"text_offset"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &whole); err != nil || len(whole.Choices) != 1 {
		t.Fatalf("%v %s", err, b)
	}
	req, _ := http.NewRequest("POST", f.http.URL+"/v1/completions", strings.NewReader(body(true)))
	req.Header.Set("Content-Type", "application/json")
	sresp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var streamed []int
	for _, line := range readSSE(t, sresp) {
		var ck struct {
			Choices []struct {
				Logprobs *struct {
					TextOffset []int `json:"text_offset"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(line), &ck) == nil && len(ck.Choices) == 1 && ck.Choices[0].Logprobs != nil {
			streamed = append(streamed, ck.Choices[0].Logprobs.TextOffset...)
		}
	}
	if !slices.Equal(streamed, whole.Choices[0].Logprobs.TextOffset) {
		t.Fatalf("stream offsets %v, response %v", streamed, whole.Choices[0].Logprobs.TextOffset)
	}
}
