package serve

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// words are common English words that are one token each (with their
// leading space) in the GPT-2, Llama 3, Qwen and Mistral vocabularies, so a
// prompt of N words is about N tokens. The chat template adds a few more;
// usage.prompt_tokens, when the server sends it, gives the actual count.
var words = strings.Fields(`the of and to in is was for on that with as by at from
his her they this have are not but had were which one all she there been
their has would when who will more no if out so said what up its about into
than them can only other new some could time these two may then do first any
my now such like our over man me even most made after also did many before
must through back years where much your way well down should because each
just those people how too little state good very make world still own see
men work long get here between both life being under never day same another
know while last might us great old year off come since against go came right
used take three`)

// synthText is n words drawn from words by r, space-separated.
func synthText(r *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n * 6)
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.String()
}

// message is one chat message.
type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// requestBody is the JSON body of a chat or text completion request.
// ignore_eos and session_id are extensions, sent only when used.
type requestBody struct {
	Model         string        `json:"model"`
	Messages      []message     `json:"messages,omitempty"`
	Prompt        string        `json:"prompt,omitempty"`
	MaxTokens     int           `json:"max_tokens"`
	Stream        bool          `json:"stream"`
	StreamOptions streamOptions `json:"stream_options"`
	IgnoreEOS     bool          `json:"ignore_eos,omitempty"`
	SessionID     string        `json:"session_id,omitempty"`
	Temperature   *float64      `json:"temperature,omitempty"`
	TopP          *float64      `json:"top_p,omitempty"`
}

// request is one request to send and where it sits in the level.
type request struct {
	Index       int
	Session     int // 1-based; 0 outside sessions
	Turn        int // 1-based; 0 outside sessions
	PromptWords int // words of synthetic text in this request's whole prompt
	MaxTokens   int
	SessionID   string
	Messages    []message // the chat history, last one the new user message
}

// body is the request's JSON body for c.Endpoint.
func (q *request) body(c Config) requestBody {
	b := requestBody{
		Model: c.Model, MaxTokens: q.MaxTokens, Stream: true,
		StreamOptions: streamOptions{IncludeUsage: true},
		IgnoreEOS:     c.IgnoreEOS, SessionID: q.SessionID,
		Temperature: c.Temperature, TopP: c.TopP,
	}
	if c.Endpoint == Completions {
		parts := make([]string, len(q.Messages))
		for i, m := range q.Messages {
			parts[i] = m.Content
		}
		b.Prompt = strings.Join(parts, "\n")
	} else {
		b.Messages = q.Messages
	}
	return b
}

// seedStream derives the random stream of one request from the run's seed,
// the level and the request's place in it, so a request's text does not
// depend on scheduling and levels do not repeat each other's prompts (which
// a prefix cache would turn into hits).
func seedStream(seed uint64, level, a, b int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(level+1)<<48^uint64(a)<<24^uint64(b)))
}

// newRequest is request i of a concurrency or rate level.
func newRequest(c Config, level, i int) *request {
	r := seedStream(c.Seed, level, i, 0)
	n := c.Prompt.Sample(r)
	return &request{
		Index: i, PromptWords: n, MaxTokens: c.Output.Sample(r),
		Messages: []message{{Role: "user", Content: synthText(r, n)}},
	}
}

// nextTurn is turn t (1-based) of session s: the first turn is a Prompt-long
// user message, later ones append the previous answer and a TurnPrompt-long
// user message to prev's history.
func nextTurn(c Config, level, index, s, t int, prev *request, answer string) *request {
	r := seedStream(c.Seed, level, s, t)
	q := &request{
		Index: index, Session: s, Turn: t, MaxTokens: c.Output.Sample(r),
		SessionID: sessionID(c.Seed, level, s),
	}
	if prev == nil {
		n := c.Prompt.Sample(r)
		q.PromptWords = n
		q.Messages = []message{{Role: "user", Content: synthText(r, n)}}
		return q
	}
	n := c.TurnPrompt.Sample(r)
	q.PromptWords = prev.PromptWords + len(strings.Fields(answer)) + n
	q.Messages = append(append(prev.Messages[:len(prev.Messages):len(prev.Messages)],
		message{Role: "assistant", Content: answer}),
		message{Role: "user", Content: synthText(r, n)})
	return q
}

func sessionID(seed uint64, level, s int) string {
	return fmt.Sprintf("bench-%d-%d-%d", seed, level, s)
}
