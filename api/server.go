package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/internal/httpauth"
	"github.com/conclave-ai/conclave/internal/peersig"
	"github.com/conclave-ai/conclave/model/tokenizer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Engine is what the API needs from the serving engine; *engine.Engine
// implements it. Submit and Embed must honour ctx (a client that goes away
// cancels its generation); Stats must be cheap (it is read at every scrape).
type Engine interface {
	Submit(ctx context.Context, r engine.Request) (<-chan engine.Event, error)
	Embed(ctx context.Context, tokens []int32) ([]float32, error)
	Stats() engine.Stats
}

// Server is the OpenAI-compatible HTTP API over one engine. Create it with
// New; mount it with Register or serve Handler; call Drain before shutting
// the engine down. Its methods are safe for concurrent use.
type Server struct {
	routes  *routeNames // the /v1 routes' names, for requests refused before routing
	cfg     Config
	eng     Engine
	tok     *tokenizer.Tokenizer
	info    ModelInfo
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	limits  *clientLimits
	keys    map[[sha256.Size]byte]int // sha256(key) → index
	peerV   *peersig.Verifier         // forwarded requests' signatures (nil: no PeerKey)
	created int64                     // /v1/models "created", Unix seconds

	v1      http.Handler // the /v1/ routes with auth and limits
	handler http.Handler // everything, for Handler

	// Draining: mu guards inflight, draining and idle.
	mu       sync.Mutex
	inflight int
	draining bool
	idle     chan struct{} // closed when inflight reaches 0 while draining
	stopCtx  context.Context
	stopAll  context.CancelFunc // ends every in-flight generation (Drain's deadline)
}

// New builds the API. tok renders chat templates and encodes prompts; info
// names the model and its context length.
func New(cfg Config, eng Engine, tok *tokenizer.Tokenizer, info ModelInfo) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := info.validate(); err != nil {
		return nil, err
	}
	if eng == nil || tok == nil {
		return nil, fmt.Errorf("%w: engine and tokenizer are required", ErrInvalidConfig)
	}
	s := &Server{cfg: cfg, eng: eng, tok: tok, info: info, log: cfg.Logger, reg: cfg.Registry,
		limits: newClientLimits(cfg.RequestsPerSecond, cfg.Burst, cfg.MaxConcurrentPerKey)}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s.created = time.Now().Unix()
	if !info.Created.IsZero() {
		s.created = info.Created.Unix()
	}
	if len(cfg.APIKeys) > 0 {
		s.keys = make(map[[sha256.Size]byte]int, len(cfg.APIKeys))
		for i, k := range cfg.APIKeys {
			s.keys[sha256.Sum256([]byte(k))] = i
		}
	} else {
		s.log.Warn("the OpenAI API is open: no API keys configured (use --api-key or --api-keys-file)")
	}
	s.peerV = peersig.NewVerifier(cfg.PeerKey, nil)
	s.metrics = newMetrics(s.reg, info.ID, eng)
	s.stopCtx, s.stopAll = context.WithCancel(context.Background())

	v1 := http.NewServeMux()
	v1.Handle("/v1/chat/completions", s.route("chat", http.MethodPost, s.generation(s.affine(s.chatJob, s.handleChat))))
	v1.Handle("/v1/completions", s.route("completions", http.MethodPost, s.generation(s.affine(s.completionJob, s.handleCompletion))))
	v1.Handle("/v1/embeddings", s.route("embeddings", http.MethodPost, s.generation(s.handleEmbeddings)))
	v1.Handle("/v1/models", s.route("models", http.MethodGet, http.HandlerFunc(s.handleModels)))
	v1.Handle("/v1/models/{id...}", s.route("models", http.MethodGet, http.HandlerFunc(s.handleModel)))
	v1.Handle("/", s.route("unknown", "", http.HandlerFunc(notFound)))
	s.routes = &routeNames{mux: v1, names: map[string]string{"/v1/chat/completions": "chat", "/v1/completions": "completions",
		"/v1/embeddings": "embeddings", "/v1/models": "models", "/v1/models/{id...}": "models"}}
	s.v1 = s.common(s.authenticate(v1))

	all := http.NewServeMux()
	s.Register(all)
	all.Handle("/", s.common(s.route("unknown", "", http.HandlerFunc(notFound))))
	s.handler = all
	return s, nil
}

// Handler returns the whole API (the /v1 routes, /health, /ready,
// /metrics, and OpenAI-style 404s elsewhere) for a server of its own.
func (s *Server) Handler() http.Handler { return s.handler }

// Register mounts the API on mux (a node's HTTP mux): /v1/…, /health,
// /ready and /metrics. Other paths are left to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("/v1/", s.v1)
	mux.Handle("/health", s.common(s.route("health", http.MethodGet, http.HandlerFunc(s.handleHealth))))
	mux.Handle("/ready", s.common(s.route("ready", http.MethodGet, http.HandlerFunc(s.handleReady))))
	mux.Handle("/metrics", s.common(s.route("metrics", http.MethodGet,
		promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{s.log}}))))
}

// Registry is the Prometheus registry /metrics serves; callers may add
// their own collectors to it.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Drain stops admitting generation and embedding requests (they get 503,
// and /ready answers 503) and waits for those in flight to finish. When ctx
// ends first it cancels them, waits for their handlers to return, and
// returns ctx's error. Drain is idempotent; there is no undrain.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	if s.inflight == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	n := s.inflight
	s.mu.Unlock()
	s.log.Info("draining the API", "in_flight", n)
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		s.log.Warn("drain deadline reached; cancelling in-flight requests", "error", ctx.Err())
		s.stopAll() // also fails their connections' pending reads and writes
		select {
		case <-idle: // cancelled generations end within an engine step
		case <-time.After(abandonAfter):
			s.mu.Lock()
			n := s.inflight
			s.mu.Unlock()
			s.log.Error("requests still running after cancellation; abandoning them", "in_flight", n, "waited", abandonAfter)
		}
		return ctx.Err()
	}
}

// errDrainCut answers a request Drain cancelled at its deadline.
var errDrainCut = &Error{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: "draining",
	Message: "the server shut down before the response was complete; retry on another node"}

// abandonAfter bounds Drain's wait, once it has cancelled what was in
// flight, for the handlers to return. They normally return within an
// engine step, since their connections' reads and writes fail at once.
const abandonAfter = 5 * time.Second

// Draining reports whether Drain has been called.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// begin admits one request unless draining; end must follow.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.inflight++
	return true
}

func (s *Server) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if s.inflight == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// --- middleware ---

type ctxKey int

const (
	keyReqInfo ctxKey = iota
)

// reqInfo travels in a request's context: set by common, filled by later
// layers, logged when the request ends.
type reqInfo struct {
	id    string
	route string
	start time.Time // arrival
	// clientGone: the client left before its answer was written (logged
	// and counted as 499 whatever was written).
	clientGone bool
	client     string // "key:DIGEST" or "ip:ADDR"
	// peer: forwarded by a node of the cluster (a valid signature), whose
	// body must have the digest peerBody.
	peer     bool
	peerBody string
	attrs    []slog.Attr
}

func info(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(keyReqInfo).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

// recorder notes the status and bytes written; Unwrap lets
// http.ResponseController reach the connection's Flush.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() { r.FlushError() }

// FlushError passes a failed flush (the client gone, a write deadline
// passed) on to http.ResponseController callers.
func (r *recorder) FlushError() error { return http.NewResponseController(r.ResponseWriter).Flush() }

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// common is the outer layer of every API route: request id (X-Request-ID in
// and out), panic recovery, the access log line and the request counter.
func (s *Server) common(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{id: requestID(r.Header.Get("X-Request-ID")), route: "unknown", start: start}
		if s.routes != nil {
			// Named before authentication, so a 401 or 429 counts under
			// its route (route sets it again, the same).
			if _, pattern := s.routes.mux.Handler(r); s.routes.names[pattern] != "" {
				ri.route = s.routes.names[pattern]
			}
		}
		w.Header().Set("X-Request-ID", ri.id)
		rec := &recorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), keyReqInfo, ri))
		defer func() {
			p := recover()
			aborted := p == http.ErrAbortHandler // a relayed response broke off: log and count it, then abort
			if p != nil && !aborted {
				s.log.Error("panic serving request", "request_id", ri.id, "path", r.URL.Path, "panic", fmt.Sprint(p),
					"stack", string(debug.Stack()))
				if rec.status == 0 {
					writeError(rec, &Error{Status: http.StatusInternalServerError, Type: typeServer,
						Message: "internal error (request " + ri.id + ")"})
				}
			}
			switch {
			case rec.status == 0 && r.Context().Err() != nil, ri.clientGone:
				// The client left before its answer (nginx's 499): not a 200.
				rec.status = statusClientClosed
			case rec.status == 0:
				rec.status = http.StatusOK
			}
			if aborted {
				ri.attrs = append(ri.attrs, slog.Bool("aborted", true))
				defer panic(p)
			}
			requests := s.metrics.httpRequests
			if ri.peer {
				// A verified peer's: the entry node counts it for its client.
				// (Without a cluster key nothing proves a request forwarded,
				// so there each node counts it.)
				requests = s.metrics.forwardedRequests
			}
			requests.WithLabelValues(ri.route, strconv.Itoa(rec.status)).Inc()
			level := slog.LevelInfo
			switch {
			case (ri.route == "health" || ri.route == "ready" || ri.route == "metrics") && rec.status != http.StatusInternalServerError:
				// Probes: a /ready 503 while loading or draining is the
				// answer asked for, not an error, every few seconds.
				level = slog.LevelDebug
			case rec.status == http.StatusServiceUnavailable:
				// Draining, loading or no replica of an expert: the answer
				// is meant, and says when to retry; a fault is logged where
				// it happens.
				level = slog.LevelWarn
			case rec.status >= 500:
				level = slog.LevelError
			}
			attrs := append([]slog.Attr{
				slog.String("request_id", ri.id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
				slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr),
			}, ri.attrs...)
			if ri.client != "" {
				attrs = append(attrs, slog.String("client", ri.client))
			}
			s.log.LogAttrs(r.Context(), level, "http request", attrs...)
		}()
		next.ServeHTTP(rec, r)
	})
}

// statusClientClosed is logged and counted for a request whose client
// left before any response was written (nginx's 499).
const statusClientClosed = 499

// routeNames names the /v1 routes by their mux pattern.
type routeNames struct {
	mux   *http.ServeMux
	names map[string]string
}

// requestID keeps a client's X-Request-ID when it is short and printable,
// else makes one.
func requestID(in string) string {
	if in != "" && len(in) <= 128 && !strings.ContainsFunc(in, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return in
	}
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// route sets the route name for logs and metrics and answers 405 for
// other methods (method "" allows any).
func (s *Server) route(name, method string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info(r).route = name
		if method != "" && r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, &Error{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Code: "method_not_allowed",
				Message: fmt.Sprintf("%s %s is not supported; use %s", r.Method, r.URL.Path, method)})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "not_found",
		Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
}

// authenticate checks the bearer key (when keys are configured), names the
// client for limits and applies its rate limit.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := info(r)
		if s.keys != nil {
			key, ok := httpauth.Bearer(r.Header.Get("Authorization"))
			d := sha256.Sum256([]byte(key))
			_, known := s.keys[d]
			if !ok || !known {
				msg := "missing API key: send Authorization: Bearer KEY"
				if ok {
					msg = "invalid API key"
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="conclave"`)
				writeError(w, &Error{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: "invalid_api_key", Message: msg})
				return
			}
			// Named by digest, not by position in the key list: the same on
			// every node, and it does not reveal the key.
			ri.client = "key:" + hex.EncodeToString(d[:6])
		} else {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				host = r.RemoteAddr
			}
			ri.client = "ip:" + host
		}
		s.verifyPeer(r, ri)
		if c := r.Header.Get(HeaderClient); c != "" && len(c) <= maxClientID && ri.peer {
			// Forwarded by a peer: the limits count the entry node's client,
			// not the entry node (every forwarded request would share one
			// open-mode client, its address).
			ri.client = c
		}
		if ok, wait := s.limits.allow(ri.client); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second))))
			writeError(w, &Error{Status: http.StatusTooManyRequests, Type: typeRateLimit, Code: "rate_limit_exceeded",
				Message: fmt.Sprintf("rate limit of %g requests/s exceeded; retry in %v", s.cfg.RequestsPerSecond, wait.Round(time.Millisecond))})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// maxClientID bounds a forwarded client name (HeaderClient).
const maxClientID = 128

// generation wraps the POST routes that use the engine: drain admission,
// the per-client concurrency cap, content type and body size. h gets the
// body already read.
func (s *Server) generation(h func(w http.ResponseWriter, r *http.Request, body []byte)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := info(r)
		if !s.begin() {
			w.Header().Set(HeaderDraining, "1")
			writeError(w, &Error{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: "draining",
				Message: "the server is draining for shutdown; retry on another node"})
			return
		}
		defer s.end()
		if s.cfg.Serving != nil {
			if err := s.cfg.Serving(); err != nil {
				// Marked as a draining node's answer: an entry node that
				// forwarded a session here re-homes it, as for a drain.
				w.Header().Set(HeaderDraining, "1")
				writeError(w, &Error{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: "model_not_live",
					Message: err.Error()})
				return
			}
		}
		if !s.limits.acquire(ri.client) {
			writeError(w, &Error{Status: http.StatusTooManyRequests, Type: typeRateLimit, Code: "concurrency_limit_exceeded",
				Message: fmt.Sprintf("at most %d concurrent requests per client", s.cfg.MaxConcurrentPerKey)})
			return
		}
		defer s.limits.release(ri.client)
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				writeError(w, &Error{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Code: "unsupported_media_type",
					Message: fmt.Sprintf("Content-Type %q is not supported; send application/json", clip(ct, 48))})
				return
			}
		}
		if r.ContentLength > s.cfg.MaxBodyBytes {
			writeError(w, tooLarge(s.cfg.MaxBodyBytes))
			return
		}
		// When Drain gives up, every handler's context ends — generations,
		// embeddings and requests forwarded to a session's home alike. A
		// read stuck on the connection fails at once; writes get
		// drainWriteGrace, time for a reading client to receive the end of
		// its stream but not for a stalled one to hold the handler.
		rc := http.NewResponseController(w)
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer context.AfterFunc(s.stopCtx, func() {
			cancel()
			rc.SetReadDeadline(pastDeadline)
			rc.SetWriteDeadline(time.Now().Add(drainWriteGrace))
		})()
		r = r.WithContext(ctx)
		w = &deadlineWriter{ResponseWriter: w, rc: rc, timeout: s.cfg.IOTimeout, stop: s.stopCtx}
		if s.cfg.IOTimeout > 0 {
			rc.SetReadDeadline(time.Now().Add(s.cfg.IOTimeout))
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
		var apiErr *Error
		if err != nil {
			var mbe *http.MaxBytesError
			switch {
			case errors.As(err, &mbe):
				writeError(w, tooLarge(s.cfg.MaxBodyBytes))
			case errors.Is(err, os.ErrDeadlineExceeded):
				writeError(w, &Error{Status: http.StatusRequestTimeout, Type: typeInvalidRequest, Code: "request_timeout",
					Message: fmt.Sprintf("the request body did not arrive within %v", s.cfg.IOTimeout)})
			default:
				writeError(w, badRequest("", "reading the request body: %v", err))
			}
			return
		}
		if s.cfg.IOTimeout > 0 && s.stopCtx.Err() == nil {
			// The server's own read that notices a client leaving runs on.
			rc.SetReadDeadline(time.Time{})
		}
		if body, apiErr = decodeContent(strings.Join(r.Header.Values("Content-Encoding"), ","), body, s.cfg.MaxBodyBytes); apiErr != nil {
			if apiErr.Status == http.StatusUnsupportedMediaType {
				w.Header().Set("Accept-Encoding", "gzip, deflate") // RFC 9110 §12.5.3
			}
			writeError(w, apiErr)
			return
		}
		// RFC 8259 §8.1 lets a parser ignore a byte order mark (some
		// Windows tools write one). It goes here, once, so that every
		// reader of the body (routing, the resume guard, the decoder, the
		// signature a forward carries) sees the same bytes.
		body = bytes.TrimPrefix(body, []byte("\uFEFF"))
		if !peerBodyMatches(ri, body) {
			writeError(w, &Error{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: "invalid_peer_signature",
				Message: "the forwarded request's body is not the one its signature covers"})
			return
		}
		h(w, r, body)
	})
}

// pastDeadline is a deadline already gone: I/O on the connection fails.
var pastDeadline = time.Unix(1, 0)

// drainWriteGrace is how long a response may still take to write once
// Drain has given up on it.
const drainWriteGrace = time.Second

// deadlineWriter gives every write and flush of a response its own
// deadline, IOTimeout from the moment it starts: a client that stops
// reading loses the connection instead of pinning its handler, its
// generation and its KV blocks. Once Drain has given up (stop), the
// deadline generation set then stays.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	stop    context.Context
}

func (d *deadlineWriter) arm() {
	if d.timeout > 0 && d.stop.Err() == nil {
		d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
		if d.stop.Err() != nil {
			// Drain gave up meanwhile (its callback may have run before the
			// line above): its shorter grace stands.
			d.rc.SetWriteDeadline(time.Now().Add(drainWriteGrace))
		}
	}
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	d.arm()
	return d.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController.Flush calls.
func (d *deadlineWriter) FlushError() error {
	d.arm()
	return d.rc.Flush()
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

func tooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: "request_too_large",
		Message: fmt.Sprintf("the request body exceeds %d bytes", limit)}
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.Draining() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining", "model": s.info.ID})
		return
	}
	if s.cfg.Drained != nil && s.cfg.Drained() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "drained", "model": s.info.ID})
		return
	}
	if s.cfg.Serving != nil {
		if err := s.cfg.Serving(); err != nil {
			// Not a wait: these weights are not the live model's, and stay
			// so until the process restarts (generation answers the same).
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "model_not_live", "model": s.info.ID, "message": err.Error()})
			return
		}
	}
	if !s.modelReady() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading", "model": s.info.ID})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "model": s.info.ID})
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	MaxLen  int    `json:"max_model_len"`
}

func (s *Server) model() modelObject {
	return modelObject{ID: s.info.ID, Object: "model", Created: s.created, OwnedBy: "conclave", MaxLen: s.info.Context}
}

// modelReady is Config.ModelReady, true when it is nil.
func (s *Server) modelReady() bool { return s.cfg.ModelReady == nil || s.cfg.ModelReady() }

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	data := []modelObject{}
	if s.modelReady() {
		data = append(data, s.model())
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != s.info.ID || !s.modelReady() {
		writeError(w, modelNotFound(id))
		return
	}
	writeJSON(w, http.StatusOK, s.model())
}

func modelNotFound(id string) *Error {
	return &Error{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("the model %q does not exist", clip(id, 96))}
}

// slogPrinter adapts slog to promhttp's error logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics", "error", fmt.Sprint(v...)) }
