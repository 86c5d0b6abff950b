package engine

import (
	"errors"
	"sort"
	"time"

	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/sample"
)

// Errors the engine returns; the API maps them to HTTP statuses.
var (
	// ErrOverloaded: the request cannot be admitted now (KV cache or queue
	// full); the client should retry later (HTTP 429).
	ErrOverloaded = errors.New("engine: overloaded")
	// ErrContextLength: prompt plus max tokens exceed the context (HTTP 400).
	ErrContextLength = errors.New("engine: context length exceeded")
	// ErrInvalidRequest: a request field is out of range (HTTP 400).
	ErrInvalidRequest = errors.New("engine: invalid request")
	// ErrClosed: the engine is shutting down (HTTP 503).
	ErrClosed = errors.New("engine: closed")
)

// Request is one generation request: already tokenized prompt, limits and
// sampling.
type Request struct {
	ID        string  // request id for logs and metrics
	SessionID string  // optional; a session's turns share prefix-cache entries
	Prompt    []int32 // token ids, BOS included when the model wants one
	MaxTokens int     // ≥ 1; generation stops after this many tokens
	// Sampling: temperature, top-p, seed, penalties. Its PromptLen 0 means
	// the whole Prompt; a continuation of tokens another node generated
	// sets it to the original prompt's length, so the presence and
	// frequency penalties count those tokens as generated.
	Sampling sample.Config
	// StopTokens end generation when produced (in addition to the model's
	// end-of-generation tokens unless IgnoreEOS).
	StopTokens []int32
	IgnoreEOS  bool
	// TopLogprobs > 0 asks for that many alternatives per token (≤ 20);
	// Logprobs asks for the chosen token's log-probability.
	Logprobs    bool
	TopLogprobs int
}

// TokenLogprob is a token with its log-probability.
type TokenLogprob struct {
	Token   int32
	Logprob float32
}

// FinishReason says why a generation ended.
type FinishReason string

const (
	FinishStop   FinishReason = "stop"   // an end-of-generation or stop token
	FinishLength FinishReason = "length" // MaxTokens or the context reached
	FinishCancel FinishReason = "cancelled"
)

// Event is one step of a generation, delivered in order on the channel
// Submit returns. The last event has Done set; the channel is then closed.
type Event struct {
	Token       int32 // valid when !Done or when Done with Generated > 0 and a final token
	HasToken    bool
	Logprob     float32
	TopLogprobs []TokenLogprob

	Done         bool
	FinishReason FinishReason
	Err          error // non-nil if the generation failed

	// Usage, filled on the final event.
	PromptTokens int
	CachedTokens int // prompt tokens served from the prefix cache
	Generated    int
	TTFT         time.Duration // submit → first token
}

// Stats is a snapshot of the engine's load for metrics and admission.
type Stats struct {
	Running, Waiting int
	KVBlocksUsed     int // blocks held by running sequences
	KVBlocksTotal    int
	KVBlocksCached   int   // unreferenced blocks kept for the prefix cache (evictable)
	Evictions        int64 // cached blocks evicted to make room
	Preemptions      int64 // running sequences sent back to the queue for lack of blocks
	PrefixHits       int64 // prompt tokens served from the prefix cache
	PrefixLookups    int64 // prompt tokens looked up
	PromptTokens     int64 // prompt tokens of the requests whose prompt is done, cached ones included, once per request
	GeneratedTokens  int64
	Steps            int64 // forward passes run

	// Every forward pass's rows (tokens in the batch) and duration (the
	// pass and its sampling), over StepTokensBounds and StepSecondsBounds.
	StepTokens, StepSeconds Hist

	// Phases is the wall time of each part of the forward passes of steps
	// and embeddings (not the warm-up), summed since New: where a step's
	// time goes (/metrics conclave:engine_phase_seconds_total).
	Phases model.PhaseTimes
}

// Bucket upper bounds of Stats.StepTokens (vLLM's iteration_tokens
// buckets) and Stats.StepSeconds.
var (
	StepTokensBounds  = []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192}
	StepSecondsBounds = []float64{0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5}
)

// Hist is a histogram over a list of bucket upper bounds (at most 15):
// Counts[i] counts the observations in (bounds[i−1], bounds[i]],
// Counts[len(bounds)] those above the last bound. An array, so a Stats
// copy is a snapshot.
type Hist struct {
	Counts [16]uint64
	Sum    float64
}

func (h *Hist) observe(bounds []float64, v float64) {
	h.Counts[sort.SearchFloat64s(bounds, v)]++
	h.Sum += v
}

// Count is the number of observations.
func (h *Hist) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Cumulative returns, for each bound, the observations at or below it, as
// Prometheus histograms take them.
func (h *Hist) Cumulative(bounds []float64) map[float64]uint64 {
	m := make(map[float64]uint64, len(bounds))
	var n uint64
	for i, b := range bounds {
		n += h.Counts[i]
		m[b] = n
	}
	return m
}
