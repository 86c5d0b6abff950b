package serve

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"time"
)

// Errors returned by this package; test them with errors.Is.
var (
	// ErrConfig marks an invalid Config.
	ErrConfig = errors.New("invalid bench config")
	// ErrNoModel means --model was empty and GET /v1/models listed none.
	ErrNoModel = errors.New("server lists no models")
	// ErrHTTPStatus is a response whose status was not 200.
	ErrHTTPStatus = errors.New("HTTP error status")
	// ErrMalformedStream is an SSE stream or chunk that could not be parsed.
	ErrMalformedStream = errors.New("malformed event stream")
	// ErrTruncated is a stream that ended before [DONE] or a finish_reason.
	ErrTruncated = errors.New("stream ended early")
	// ErrServerError is an error object sent inside a 200 stream.
	ErrServerError = errors.New("server error in stream")
	// ErrNoOutput is a stream that finished without any output text, so it
	// has no TTFT.
	ErrNoOutput = errors.New("no output tokens")
)

// Endpoint is the OpenAI API a run calls.
type Endpoint string

// The two streaming text APIs.
const (
	Chat        Endpoint = "chat"        // POST /v1/chat/completions with messages
	Completions Endpoint = "completions" // POST /v1/completions with a prompt
)

// Path is the endpoint's path below the base URL.
func (e Endpoint) Path() string {
	if e == Completions {
		return "/v1/completions"
	}
	return "/v1/chat/completions"
}

// Config describes one sweep. Exactly one mode applies: Sessions > 0 runs
// sessions, else a non-empty Rates runs open-loop levels, else Concurrency
// runs closed-loop levels.
type Config struct {
	// URL is the server's base URL (scheme and host, optionally /v1).
	URL      string   `json:"url"`
	Endpoint Endpoint `json:"endpoint"`
	// Model is sent in every request; empty means the first id listed by
	// GET /v1/models, resolved by Run.
	Model string `json:"model"`
	// APIKey is sent as a Bearer token when set; never written to reports.
	APIKey string `json:"-"`

	// Prompt is the length of each prompt (the first turn's in sessions), in
	// words of synthetic text (≈ tokens).
	Prompt Dist `json:"prompt"`
	// Output is max_tokens of each request.
	Output Dist `json:"output"`
	// IgnoreEOS sends "ignore_eos": true so that servers that know the
	// extension (vLLM, llama.cpp, Conclave) generate exactly max_tokens.
	IgnoreEOS bool `json:"ignore_eos"`
	// Temperature and TopP are sent when set (nil: the server's defaults,
	// 1 and 1 for OpenAI's API): sampling costs differ, top-p most.
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`

	// Concurrency lists closed-loop levels: workers in flight at once.
	Concurrency []int `json:"concurrency,omitempty"`
	// Rates lists open-loop levels in requests per second (Poisson arrivals).
	Rates []float64 `json:"rates,omitempty"`
	// Requests is the number of requests per level; 0 means no count limit
	// (Duration must then be set). Ignored by sessions.
	Requests int `json:"requests"`
	// Duration stops sending new requests in a level after this long; those
	// in flight finish and count. 0 means no time limit.
	Duration time.Duration `json:"duration_ns"`

	// Sessions is the number of concurrent multi-turn conversations, Turns
	// the requests in each. Turn k > 1 sends the whole history plus a new
	// user message of TurnPrompt words.
	Sessions   int  `json:"sessions,omitempty"`
	Turns      int  `json:"turns,omitempty"`
	TurnPrompt Dist `json:"turn_prompt"`

	// Seed makes prompts, lengths and arrivals reproducible.
	Seed uint64 `json:"seed"`
	// Warmup requests are sent one at a time before the first level and not
	// measured; a failing warm-up stops the run.
	Warmup int `json:"warmup"`
	// Timeout bounds one request from send to end of stream.
	Timeout time.Duration `json:"timeout_ns"`
}

// DefaultConfig is a chat sweep of one level: 32 requests, one at a time,
// 128-word prompts, 64 output tokens.
func DefaultConfig() Config {
	return Config{
		URL:         "http://127.0.0.1:8080",
		Endpoint:    Chat,
		Prompt:      Fixed(128),
		Output:      Fixed(64),
		Concurrency: []int{1},
		Requests:    32,
		TurnPrompt:  Fixed(32),
		Seed:        1,
		Timeout:     10 * time.Minute,
	}
}

// Mode is the way a level sends requests.
type Mode string

// The three modes; see the package comment.
const (
	ModeConcurrency Mode = "concurrency"
	ModeRate        Mode = "rate"
	ModeSessions    Mode = "sessions"
)

// Mode is the mode this config runs.
func (c Config) Mode() Mode {
	switch {
	case c.Sessions > 0:
		return ModeSessions
	case len(c.Rates) > 0:
		return ModeRate
	}
	return ModeConcurrency
}

// Validate reports the first problem, wrapped in ErrConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("url %q is not an http(s) base URL", c.URL)
	}
	if c.Endpoint != Chat && c.Endpoint != Completions {
		return bad("endpoint %q is not chat or completions", c.Endpoint)
	}
	for name, d := range map[string]Dist{"prompt": c.Prompt, "output": c.Output, "turn prompt": c.TurnPrompt} {
		if err := d.Validate(); err != nil {
			return bad("%s length: %v", name, err)
		}
	}
	if c.Requests < 0 || c.Duration < 0 || c.Warmup < 0 || c.Timeout <= 0 {
		return bad("requests, duration and warmup must be ≥ 0 and timeout > 0")
	}
	if t := c.Temperature; t != nil && !(*t >= 0 && *t <= 2) {
		return bad("temperature %v is not in [0, 2]", *t)
	}
	if p := c.TopP; p != nil && !(*p > 0 && *p <= 1) {
		return bad("top_p %v is not in (0, 1]", *p)
	}
	switch c.Mode() {
	case ModeSessions:
		if c.Turns < 1 {
			return bad("sessions need turns ≥ 1")
		}
		if len(c.Rates) > 0 {
			return bad("sessions and rates are exclusive")
		}
		return nil
	case ModeRate:
		for _, r := range c.Rates {
			if !(r > 0) || math.IsInf(r, 0) {
				return bad("rate %v is not a positive number of requests/s", r)
			}
		}
	default:
		if len(c.Concurrency) == 0 {
			return bad("no concurrency levels")
		}
		for _, n := range c.Concurrency {
			if n < 1 {
				return bad("concurrency %d < 1", n)
			}
		}
	}
	if c.Requests == 0 && c.Duration == 0 {
		return bad("set requests or duration per level")
	}
	return nil
}
