package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/conclave-ai/conclave/internal/httpauth"
	"github.com/conclave-ai/conclave/internal/peersig"
)

// ErrUnauthorized is an admin call without an accepted credential.
var ErrUnauthorized = errors.New("cluster: admin API needs an admin key")

// The admin API (/admin/…) can drain and remove nodes, apply map commands
// and swap experts. It is guarded once Config.AdminKeys are set, or
// Config.AdminGuard asks for it (serve/node do when API keys are set, so a
// key-protected port is protected whole): then it takes Authorization:
// Bearer with one of the admin keys, or a request signed with the key every
// node derives from Config.ClusterKey (internal/peersig). API keys are never
// admin keys. A node signs its own calls to peers, guarded or not, so nodes
// need no admin key of their own (without a cluster key it sends its first
// admin key instead); a guarded multi-node cluster therefore wants a
// cluster key. Unguarded, the admin API is open, as the loopback
// single-node default is; a node listening elsewhere warns. /healthz stays
// open for probes.
//
// Node-to-node admin traffic is plain HTTP like the API (--tls-dir covers
// Raft and the actors). A signature binds the method, path, body, time and
// the receiving node's address (Config.HTTPAddr, as the map names it) and
// is accepted once, so one seen on the wire cannot be reused for another
// request, another node, or after a minute; the traffic itself stays
// readable, so run clusters on a private network.

// adminPurpose names the admin signing key (peersig.Key).
const adminPurpose = "admin"

// PeerKey derives from the cluster key the key nodes sign the API requests
// they forward to each other with (api.Config.PeerKey); nil without a key.
// It differs from the admin signing key, so it grants no admin access.
func PeerKey(clusterKey []byte) []byte { return peersig.Key(clusterKey, "api") }

// adminAuth holds the accepted credentials, as digests.
type adminAuth struct {
	guarded  bool
	accepted [][sha256.Size]byte
	verifier *peersig.Verifier // nil without a cluster key
	signKey  []byte            // what this node signs its calls with (nil: none)
	self     string            // this node's HTTP address, which signatures to it name
	bearer   string            // else the admin key it sends ("": nothing)
}

func newAdminAuth(cfg Config) *adminAuth {
	a := &adminAuth{guarded: cfg.AdminGuard || len(cfg.AdminKeys) > 0, self: cfg.HTTPAddr}
	a.signKey = peersig.Key(cfg.ClusterKey, adminPurpose)
	if a.signKey == nil && len(cfg.AdminKeys) > 0 {
		a.bearer = cfg.AdminKeys[0]
	}
	if !a.guarded {
		return a
	}
	for _, k := range cfg.AdminKeys {
		a.accepted = append(a.accepted, sha256.Sum256([]byte(k)))
	}
	a.verifier = peersig.NewVerifier(a.signKey, nil)
	return a
}

func (a *adminAuth) open() bool { return !a.guarded }

func (a *adminAuth) allows(key string) bool {
	d := sha256.Sum256([]byte(key))
	ok := 0 // nothing accepted (guarded, no admin key): closed
	for _, k := range a.accepted {
		ok |= subtle.ConstantTimeCompare(d[:], k[:])
	}
	return ok == 1
}

// unsignedBodyRoute reports whether a request may be signed without its
// body: a content-addressed upload, which the handler checks against the
// digest in its (signed) path.
func unsignedBodyRoute(method, p string) bool {
	return method == http.MethodPut && strings.HasPrefix(p, "/admin/v1/expert-files/")
}

// peerSigned marks a request the guard accepted by a peer's signature
// (so proxyToLeader may sign it on as this node).
type peerSignedKey struct{}

func signedByPeer(r *http.Request) bool { return r.Context().Value(peerSignedKey{}) != nil }

// signedBodyReadTimeout bounds the read of a signed request's body (small:
// maxBody at most), once its signature has been verified.
const signedBodyReadTimeout = 30 * time.Second

// checkSignature verifies r's peer signature, then, when it covers the
// body, reads (and replaces) the body and checks its digest. The signature
// (over the digest it claims) is checked first: nothing is read for a
// request that cannot be a peer's, and the read has a deadline.
func (a *adminAuth) checkSignature(w http.ResponseWriter, r *http.Request, p string) error {
	s, ok := peersig.Parse(r.Header)
	if !ok {
		return peersig.ErrMissing
	}
	if !s.CoversBody() && !unsignedBodyRoute(r.Method, p) {
		return fmt.Errorf("%w: the signature leaves out a body this route needs signed", peersig.ErrInvalid)
	}
	if err := a.verifier.Verify(s, r.Method, r.URL.RequestURI(), s.Body(), a.self); err != nil {
		return err
	}
	if !s.CoversBody() {
		return nil // content-addressed uploads (expert files) are signed without theirs
	}
	// Admin bodies are small (maxBody). The deadline is lifted once read:
	// left on the connection it would end the request's context while a
	// long call (a forwarded apply waiting out a leader change) runs.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(signedBodyReadTimeout))
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	rc.SetReadDeadline(time.Time{})
	if err != nil {
		return err
	}
	if len(b) > maxBody {
		return fmt.Errorf("%w: signed body over %d bytes", peersig.ErrInvalid, maxBody)
	}
	if peersig.BodyDigest(b) != s.Body() {
		return fmt.Errorf("%w: body digest differs", peersig.ErrInvalid)
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

// guard requires an accepted credential on the admin routes of next.
func (a *adminAuth) guard(next http.Handler) http.Handler {
	if a.open() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := path.Clean("/" + r.URL.Path); p == "/admin" || strings.HasPrefix(p, "/admin/") {
			key, bearer := httpauth.Bearer(r.Header.Get("Authorization"))
			switch {
			case bearer && a.allows(key):
			case !bearer && r.Header.Get(peersig.Header) != "":
				if err := a.checkSignature(w, r, p); err != nil {
					unauthorized(w, "invalid peer signature: "+err.Error())
					return
				}
				r = r.WithContext(context.WithValue(r.Context(), peerSignedKey{}, true))
			default:
				unauthorized(w, ErrUnauthorized.Error()+": send Authorization: Bearer KEY (--admin-key)")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="conclave-admin"`)
	var b errorBody
	b.Error.Type = "unauthorized"
	b.Error.Message = msg
	writeJSON(w, http.StatusUnauthorized, b)
}

// sign adds this node's credential to a request it sends a peer (or one it
// relays for a peer whose signature it accepted): a signature when it has
// a cluster key, else its admin key as a bearer token. body is the
// request's body (nil: none).
func (a *adminAuth) sign(req *http.Request, body []byte) {
	switch {
	case a.signKey != nil:
		digest := peersig.BodyDigest(body)
		if body == nil && req.Body != nil && req.Body != http.NoBody {
			digest = peersig.UnsignedBody // a stream: see unsignedBodyRoute
		}
		peersig.Sign(req.Header, a.signKey, time.Now(), req.Method, req.URL.RequestURI(), digest, req.URL.Host)
	case a.bearer != "":
		req.Header.Set("Authorization", "Bearer "+a.bearer)
	}
}

// signingTransport signs the requests a node sends its peers, unless they
// carry credentials already.
type signingTransport struct {
	auth *adminAuth
	base http.RoundTripper
}

func (t *signingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	if req.Header.Get("Authorization") != "" || req.Header.Get(peersig.Header) != "" {
		return base.RoundTrip(req)
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody && !unsignedBodyRoute(req.Method, req.URL.Path) {
		// Bodies small enough to sign are held in memory by their senders
		// (http.NewRequest keeps a copy for GetBody).
		if req.GetBody == nil {
			return nil, fmt.Errorf("cluster: cannot sign a %s %s without GetBody", req.Method, req.URL.Path)
		}
		rc, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		body, err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		if body == nil {
			body = []byte{}
		}
	}
	req = req.Clone(req.Context())
	t.auth.sign(req, body)
	return base.RoundTrip(req)
}

// loopback reports whether a listener's address is a loopback one.
func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
