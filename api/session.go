package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	"github.com/conclave-ai/conclave/internal/peersig"
)

// SessionRouter decides which node serves a session's requests, so that a
// session's turns run where its KV blocks (the prefix cache) already are.
// In a cluster it is backed by the Raft map (cluster.SessionRouter); a nil
// Config.Sessions serves every request locally. Implementations must be
// safe for concurrent use.
type SessionRouter interface {
	// Route returns where sessionID's requests run: local, or target, the
	// base URL ("http://host:port") of the session's home node. It may
	// assign the session a home and record its use (cluster writes); a new
	// session is recorded as client's (the limits' key), so that at the
	// cluster's session cap a client evicts its own sessions. It blocks at
	// most until ctx ends. An error means "no routing decision": the API
	// then serves the request locally.
	Route(ctx context.Context, sessionID, client string) (local bool, target string, err error)

	// Rehome is called when failed, a target Route returned, could not be
	// reached (or was draining) before it sent any response: it gives the
	// session a home other than failed's node and returns the new route,
	// as Route does.
	Rehome(ctx context.Context, sessionID, client, failed string) (local bool, target string, err error)
}

// HeaderForwarded marks a request one node forwarded to a session's home:
// the receiver serves it locally and never forwards it again (so a map
// that changes while the request is in flight cannot make a loop).
const HeaderForwarded = "X-Conclave-Forwarded"

// HeaderWaited carries, on a forwarded request, the microseconds the entry
// node had held it (reading, routing its session, failed forwards): the
// home's latency metrics count from the client's arrival, not its own.
const HeaderWaited = "X-Conclave-Waited-Us"

// maxWaited bounds what a home believes of HeaderWaited.
const maxWaited = 10 * time.Minute

// waited is the entry node's wait a forwarded request carries, 0 for any
// other request or a value out of bounds. Only a verified peer's request
// is believed: without a cluster key a client could set the header.
func (s *Server) waited(r *http.Request) time.Duration {
	if !info(r).peer {
		return 0
	}
	us, err := strconv.ParseInt(r.Header.Get(HeaderWaited), 10, 64)
	if err != nil || us < 0 || time.Duration(us)*time.Microsecond > maxWaited {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// HeaderClient carries, on a request one node forwards to another, the
// client the entry node identified (its limits' key); the request's
// signature (peersig.Header) binds it.
const HeaderClient = "X-Conclave-Client"

// verifyPeer checks, once per request, whether r was forwarded by a node of
// this cluster: it carries HeaderForwarded and a valid signature made with
// the shared PeerKey. The signature's body digest is checked when the body
// has been read (peerBodyMatches).
func (s *Server) verifyPeer(r *http.Request, ri *reqInfo) {
	if s.peerV == nil || r.Header.Get(HeaderForwarded) == "" {
		return
	}
	sig, ok := peersig.Parse(r.Header)
	if !ok || !sig.CoversBody() {
		return
	}
	if err := s.peerV.Verify(sig, r.Method, r.URL.RequestURI(), sig.Body(), r.Header.Get(HeaderClient), s.cfg.PeerAddr); err != nil {
		s.log.Warn("a forwarded request's signature was refused", "request_id", ri.id, "err", err, "remote", r.RemoteAddr)
		return
	}
	ri.peer, ri.peerBody = true, sig.Body()
}

// peerBodyMatches reports whether the body read for a request accepted as
// a peer's is the one its signature covers.
func peerBodyMatches(ri *reqInfo, body []byte) bool {
	return !ri.peer || peersig.BodyDigest(body) == ri.peerBody
}

// forwarded reports whether r comes from another node (so it is served
// here, may resume a stream, and streams token ids): with a PeerKey only
// when its signature verified, without one (a cluster with no key) on the
// header.
func (s *Server) forwarded(r *http.Request) bool {
	if s.peerV != nil {
		return info(r).peer
	}
	return r.Header.Get(HeaderForwarded) != ""
}

// markForwarded sets the headers of a request this node forwards to u for
// client (as authenticate named it), signing it when the cluster has a
// key (for u's node only: u.Host is that node's address in the map).
func (s *Server) markForwarded(h http.Header, method string, u *url.URL, body []byte, ri *reqInfo) {
	id, client := ri.id, ri.client
	h.Set(HeaderForwarded, "1")
	h.Set("X-Request-ID", id)
	h.Set(HeaderWaited, strconv.FormatInt(time.Since(ri.start).Microseconds(), 10))
	h.Del(peersig.Header) // never pass on what a client sent
	h.Del(HeaderClient)
	if len(s.cfg.PeerKey) > 0 {
		h.Set(HeaderClient, client)
		peersig.Sign(h, s.cfg.PeerKey, time.Now(), method, u.RequestURI(), peersig.BodyDigest(body), client, u.Host)
	}
}

// HeaderDraining marks the 503 a draining (or starting) server answers, so
// a forwarding node re-homes the session instead of passing the 503 on.
const HeaderDraining = "X-Conclave-Draining"

// maxRehomes bounds the homes tried for one request before it is served
// locally.
const maxRehomes = 2

// errHomeDraining is how a forward that reached a draining home fails.
var errHomeDraining = errors.New("api: the session's home is draining")

// forwardTransport carries forwarded requests between nodes. A dead home
// should fail fast (the request then runs on a new home); a live one may
// take as long as a generation takes before its headers arrive.
var forwardTransport http.RoundTripper = &http.Transport{
	Proxy:               nil, // nodes talk to each other directly
	DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     90 * time.Second,
}

// sessionOf returns the request's session id: the body's session_id, else
// the X-Session-ID header. A body that does not parse has none (the
// handler reports the error).
func sessionOf(r *http.Request, body []byte) string {
	var p struct {
		SessionID string `json:"session_id"`
	}
	if json.Unmarshal(dropMiscased(body, genParamsType), &p) == nil && p.SessionID != "" {
		return p.SessionID
	}
	return r.Header.Get("X-Session-ID")
}

// affine routes a generation request with a session id to the session's
// home: it runs h here when this node is the home (or the request was
// already forwarded, or routing fails), else proxies the request to the
// home, re-homing the session when the home cannot be reached. A streaming
// request is relayed event by event (streamRelay), so a home that fails
// mid-stream is replaced too: the generation continues on the new home (or
// here) from the tokens already streamed.
//
// The request is validated (check) before it is routed: routing a new
// session is a Raft write in a cluster, which a request that can only fail
// must not cost, nor leave a session behind.
func (s *Server) affine(check func(body []byte) (*job, *Error), h func(w http.ResponseWriter, r *http.Request, body []byte)) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		// The header is held to the body's limit: a session id too long
		// for one is too long for the other.
		if len(r.Header.Get("X-Session-ID")) > maxSessionID {
			writeError(w, badRequest("X-Session-ID", "the X-Session-ID header is longer than %d bytes", maxSessionID))
			return
		}
		sr := s.cfg.Sessions
		if sr == nil || s.forwarded(r) {
			h(w, r, body)
			return
		}
		if hasResume(body) {
			// Never forward a client's continuation: the home would take it
			// for one of ours.
			writeError(w, badRequest(resumeField, "%s is an internal field between cluster nodes", resumeField))
			return
		}
		id := sessionOf(r, body)
		if id == "" || len(id) > maxSessionID {
			h(w, r, body)
			return
		}
		j, e := check(body)
		if e != nil {
			writeError(w, e)
			return
		}
		ri := info(r)
		local, target, err := sr.Route(r.Context(), id, ri.client)
		var relay *streamRelay
		if isStream(body) {
			relay = newStreamRelay(s, w, r, body)
		}
		for attempt := 0; ; attempt++ {
			if err != nil {
				s.log.Warn("session routing failed; serving locally", "request_id", ri.id, "session_id", id, "error", err)
				break
			}
			if local {
				break
			}
			var ferr error
			if relay != nil {
				ferr = relay.relay(target)
			} else {
				ferr = s.forward(w, r, body, target)
			}
			if ferr == nil {
				ri.attrs = append(ri.attrs, slog.String("forwarded_to", target))
				// A relayed stream the client left mid-way is a 499, as
				// one served here is.
				ri.clientGone = relay != nil && s.stopCtx.Err() == nil &&
					(relay.clientGone || r.Context().Err() != nil && !relay.finished)
				if relay != nil && relay.resumes > 0 {
					ri.attrs = append(ri.attrs, slog.Int("resumes", relay.resumes))
				}
				if relay != nil && relay.cut && s.stopCtx.Err() != nil {
					s.drainCut(w, relay)
				}
				return
			}
			if r.Context().Err() != nil {
				if s.stopCtx.Err() != nil {
					s.drainCut(w, relay) // this node's drain gave up, not the client
				} else {
					ri.clientGone = true // 499 even when a relayed stream had begun
				}
				return // the client went away; nothing to answer
			}
			if relay != nil && relay.headersOut {
				s.log.Warn("session home failed mid-stream; re-homing and resuming", "request_id", ri.id, "session_id", id,
					"home", target, "tokens_streamed", len(relay.ids), "error", ferr)
			} else {
				s.log.Warn("session home unreachable; re-homing", "request_id", ri.id, "session_id", id, "home", target, "error", ferr)
			}
			if attempt == maxRehomes {
				break
			}
			local, target, err = sr.Rehome(r.Context(), id, ri.client, target)
		}
		if relay != nil {
			relay.local(h)
			return
		}
		// Served here: h takes the job check built (no second tokenization).
		h(w, r.WithContext(context.WithValue(r.Context(), keyJob{}, j)), body)
	}
}

// drainCut tells a client whose forwarded request this node's drain
// deadline cut short (the relay or forward stopped with the handler's
// context) that it did not complete, as a request served here is told: an
// error event ending a stream already open, else a draining 503.
func (s *Server) drainCut(w http.ResponseWriter, relay *streamRelay) {
	if relay != nil && relay.headersOut {
		if !relay.finished {
			b, _ := json.Marshal(errDrainCut)
			relay.write(append(append([]byte("data: "), b...), "\n\n"...))
		}
		relay.write([]byte("data: [DONE]\n\n"))
		return
	}
	w.Header().Set(HeaderDraining, "1")
	writeError(w, errDrainCut)
}

// keyJob carries a job affine validated to the handler.
type keyJob struct{}

// jobFor returns the job affine validated for r, else parse(body).
func jobFor(r *http.Request, body []byte, parse func([]byte) (*job, *Error)) (*job, *Error) {
	if j, ok := r.Context().Value(keyJob{}).(*job); ok {
		return j, nil
	}
	return parse(body)
}

// forward proxies r (whose body was read into body) to target, streaming
// the answer through unbuffered. It returns an error, having written
// nothing, when target failed before sending a response or answered that
// it is draining; nil once a response has been relayed.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte, target string) error {
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	ri := info(r)
	var failed error
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
			s.markForwarded(pr.Out.Header, pr.Out.Method, pr.Out.URL, body, ri)
			pr.Out.Body = io.NopCloser(bytes.NewReader(body))
			pr.Out.ContentLength = int64(len(body))
			pr.Out.TransferEncoding = nil
			pr.Out.Header.Del("Content-Encoding") // body is the decoded one
			pr.Out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			// A generation changes nothing on the home, so the transport may
			// resend it on a fresh connection when a pooled one turns out
			// closed (a nil value marks it idempotent without sending it).
			pr.Out.Header["X-Idempotency-Key"] = nil
		},
		Transport:     forwardTransport,
		FlushInterval: -1, // SSE: every chunk as it arrives
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(HeaderDraining) != "" {
				return errHomeDraining
			}
			resp.Header.Del("X-Request-ID") // common already set it (the same id)
			return nil
		},
		ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) { failed = err },
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	p.ServeHTTP(w, r)
	return failed
}
