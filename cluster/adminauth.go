package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"path"
	"strings"

	"github.com/conclave-ai/conclave/internal/httpauth"
)

// ErrUnauthorized is an admin call without an accepted credential.
var ErrUnauthorized = errors.New("cluster: admin API needs an admin key")

// The admin API (/admin/…) can drain and remove nodes, apply map commands
// and swap experts. It is guarded once Config.AdminKeys are set, or
// Config.AdminGuard asks for it (serve/node do when API keys are set, so a
// key-protected port is protected whole): then it takes Authorization:
// Bearer with one of the admin keys or the token every node derives from
// Config.ClusterKey. API keys are never admin keys. A node sends that token
// (or, without a cluster key, its first admin key) on its own calls to
// peers, guarded or not, so nodes need no admin key of their own; a guarded
// multi-node cluster therefore wants a cluster key. Unguarded, the admin
// API is open, as the loopback single-node default is; a node listening
// elsewhere warns. /healthz stays open for probes.
//
// Node-to-node admin traffic is plain HTTP like the API (--tls-dir covers
// Raft and the actors), so the token is as exposed as the requests it
// rides on: run clusters on a private network.

// clusterToken derives the nodes' shared admin token from the cluster key
// (HMAC-SHA256, so the gossip key itself never travels).
func clusterToken(key []byte) string { return derive(key, "conclave admin token v1") }

// PeerToken derives from the cluster key the token nodes put on the API
// requests they forward to each other (api.Config.PeerToken); "" without a
// key. It differs from the admin token, so it grants no admin access.
func PeerToken(key []byte) string { return derive(key, "conclave api peer token v1") }

func derive(key []byte, purpose string) string {
	if len(key) == 0 {
		return ""
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	return hex.EncodeToString(m.Sum(nil))
}

// adminAuth holds the accepted credentials, as digests.
type adminAuth struct {
	guarded  bool
	accepted [][sha256.Size]byte
	peer     string // what this node sends to others ("": nothing)
}

func newAdminAuth(cfg Config) *adminAuth {
	a := &adminAuth{guarded: cfg.AdminGuard || len(cfg.AdminKeys) > 0}
	token := clusterToken(cfg.ClusterKey)
	switch {
	case token != "":
		a.peer = token
	case len(cfg.AdminKeys) > 0:
		a.peer = cfg.AdminKeys[0]
	}
	if !a.guarded {
		return a
	}
	for _, k := range cfg.AdminKeys {
		a.accepted = append(a.accepted, sha256.Sum256([]byte(k)))
	}
	if token != "" {
		a.accepted = append(a.accepted, sha256.Sum256([]byte(token)))
	}
	return a
}

func (a *adminAuth) open() bool { return !a.guarded }

func (a *adminAuth) allows(key string) bool {
	d := sha256.Sum256([]byte(key))
	ok := 0 // nothing accepted (guarded, no admin key, no cluster key): closed
	for _, k := range a.accepted {
		ok |= subtle.ConstantTimeCompare(d[:], k[:])
	}
	return ok == 1
}

// guard requires an accepted credential on the admin routes of next.
func (a *adminAuth) guard(next http.Handler) http.Handler {
	if a.open() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := path.Clean("/" + r.URL.Path); p == "/admin" || strings.HasPrefix(p, "/admin/") {
			if key, ok := httpauth.Bearer(r.Header.Get("Authorization")); !ok || !a.allows(key) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="conclave-admin"`)
				var b errorBody
				b.Error.Type = "unauthorized"
				b.Error.Message = ErrUnauthorized.Error() + ": send Authorization: Bearer KEY (--admin-key)"
				writeJSON(w, http.StatusUnauthorized, b)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// bearerTransport adds a bearer credential to requests that carry none.
type bearerTransport struct {
	token string
	base  http.RoundTripper
}

func (t *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	if t.token == "" || req.Header.Get("Authorization") != "" {
		return base.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+t.token)
	return base.RoundTrip(req)
}

// loopback reports whether a listener's address is a loopback one.
func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
