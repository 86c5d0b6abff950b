package api

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrInvalidConfig is wrapped by Config.Validate's errors.
var ErrInvalidConfig = errors.New("api: invalid config")

// Config configures the HTTP API. Build it with DefaultConfig and Validate
// it (New does).
type Config struct {
	// APIKeys are the accepted bearer tokens. Empty means the API is open
	// (New logs a warning); /health, /ready and /metrics are always open.
	APIKeys []string

	// RequestsPerSecond is the sustained request rate allowed per API key
	// (per client IP when the API is open), in requests per second; 0 is
	// unlimited. Burst is the token-bucket size in requests (≥ 1 when
	// RequestsPerSecond > 0).
	RequestsPerSecond float64
	Burst             int

	// MaxConcurrentPerKey caps the generation and embedding requests one key
	// (or open-mode client IP) may have in flight; 0 is unlimited. Requests
	// over the cap get 429 at once rather than queueing.
	MaxConcurrentPerKey int

	// MaxBodyBytes bounds a request body in bytes; larger bodies get 413.
	MaxBodyBytes int64

	// DefaultMaxTokens is the generation limit, in tokens, when a request
	// gives no max_tokens; it is further capped by the room the prompt
	// leaves in the context. 0 means "all the room the context leaves".
	DefaultMaxTokens int

	// KeepAlive is the period of SSE comment lines sent while a stream has
	// produced nothing yet (a long prefill behind a queue), so proxies keep
	// the connection; 0 disables them.
	KeepAlive time.Duration

	// IOTimeout bounds how long reading a request body, and each write of a
	// response, may take. A client that stops reading its stream for this
	// long loses the connection, so its generation is cancelled and its KV
	// blocks and concurrency slot are freed; a body that does not arrive in
	// time gets 408. 0 means no limit.
	IOTimeout time.Duration

	// Logger receives structured request logs; nil means slog.Default().
	Logger *slog.Logger

	// Sessions routes requests that carry a session id to the session's
	// home node (see SessionRouter); nil serves every request locally.
	Sessions SessionRouter

	// PeerKey is a key the cluster's nodes share (derived from the cluster
	// key). Requests this node forwards to a session's home are signed with
	// it (internal/peersig: method, path, body, time, and the client the
	// entry node identified, HeaderClient); a home counts such a request
	// against that client's limits, not the entry node's (in open mode
	// every forwarded request would otherwise share one client, the
	// entry's address), and only requests with a valid signature count as
	// forwarded. Each signature is accepted once. Empty (a cluster without
	// a key): the forwarded header is trusted and forwarded requests are
	// limited as the entry node's.
	PeerKey []byte
	// PeerAddr is this node's HOST:PORT as the cluster's nodes reach it
	// (its HTTP address in the cluster map). A forwarded request's
	// signature names the node it was sent to, so it is good on this node
	// only; required with PeerKey.
	PeerAddr string

	// ModelReady reports whether the model can be served now (in a
	// cluster: every expert of the live model has a ready replica and the
	// engine has run its warm-up step). While
	// it returns false, /v1/models lists nothing, /v1/models/{id} answers
	// 404 and /ready answers 503 "loading". nil means always ready.
	ModelReady func() bool

	// Drained, when set, reports whether the cluster has drained this node
	// (an operator's `cluster drain`): /ready then answers 503 "drained",
	// so a load balancer takes the node out of rotation before it is
	// stopped. Requests that still arrive are served.
	Drained func() bool

	// Serving, when set, reports why this node cannot generate at all now
	// (in a cluster: its weights are not the cluster's live model, and
	// mixing them with the live model's experts would answer with neither
	// model): generation and embedding requests then get 503
	// model_not_live with its message. nil, or a nil error, serves.
	Serving func() error

	// Registry is where the API registers its Prometheus metrics and what
	// /metrics serves; nil means a fresh registry per Server (with the Go
	// and process collectors), so several servers can live in one process.
	Registry *prometheus.Registry
}

// DefaultConfig returns an open API with no rate limit, 64 concurrent
// requests per client, 1 MiB bodies and generations up to the context size.
func DefaultConfig() Config {
	return Config{
		MaxConcurrentPerKey: 64,
		MaxBodyBytes:        1 << 20,
		KeepAlive:           15 * time.Second,
		IOTimeout:           30 * time.Second,
	}
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.RequestsPerSecond < 0 || math.IsNaN(c.RequestsPerSecond) || math.IsInf(c.RequestsPerSecond, 0):
		return fmt.Errorf("%w: RequestsPerSecond %v must be finite and ≥ 0", ErrInvalidConfig, c.RequestsPerSecond)
	case c.RequestsPerSecond > 0 && c.Burst < 1:
		return fmt.Errorf("%w: Burst %d must be ≥ 1 with a rate limit", ErrInvalidConfig, c.Burst)
	case c.Burst < 0:
		return fmt.Errorf("%w: Burst %d is negative", ErrInvalidConfig, c.Burst)
	case c.MaxConcurrentPerKey < 0:
		return fmt.Errorf("%w: MaxConcurrentPerKey %d is negative", ErrInvalidConfig, c.MaxConcurrentPerKey)
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("%w: MaxBodyBytes %d is below 1024", ErrInvalidConfig, c.MaxBodyBytes)
	case c.DefaultMaxTokens < 0:
		return fmt.Errorf("%w: DefaultMaxTokens %d is negative", ErrInvalidConfig, c.DefaultMaxTokens)
	case c.KeepAlive < 0:
		return fmt.Errorf("%w: KeepAlive %v is negative", ErrInvalidConfig, c.KeepAlive)
	case c.IOTimeout < 0:
		return fmt.Errorf("%w: IOTimeout %v is negative", ErrInvalidConfig, c.IOTimeout)
	case len(c.PeerKey) > 0 && c.PeerAddr == "":
		return fmt.Errorf("%w: PeerKey needs PeerAddr (this node's address in the cluster)", ErrInvalidConfig)
	}
	for i, k := range c.APIKeys {
		if k == "" || strings.ContainsAny(k, " \t\r\n") {
			return fmt.Errorf("%w: APIKeys[%d] is empty or holds white space", ErrInvalidConfig, i)
		}
	}
	return nil
}

// ModelInfo describes the served model.
type ModelInfo struct {
	// ID is the model name clients put in "model" and /v1/models lists
	// (general.name, else the file's base name).
	ID string
	// Context is the context length in tokens: prompt plus generated tokens
	// of one request must fit in it.
	Context int
	// Dim is the embedding width /v1/embeddings returns (0: not checked).
	Dim int
	// Created is the model's creation time for /v1/models (the file's
	// modification time); zero means the server's start.
	Created time.Time
}

func (m ModelInfo) validate() error {
	if m.ID == "" {
		return fmt.Errorf("%w: ModelInfo.ID is empty", ErrInvalidConfig)
	}
	if m.Context < 2 {
		return fmt.Errorf("%w: ModelInfo.Context %d is below 2", ErrInvalidConfig, m.Context)
	}
	return nil
}
