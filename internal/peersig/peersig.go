// Package peersig signs the HTTP requests a cluster's nodes send each other
// (admin calls, forwarded API requests) with a key derived from the cluster
// key, so that what crosses the network is never a reusable credential.
//
// A signature covers a purpose (what the key is for), the method, the
// request URI, a timestamp, a random nonce, a digest of the body (or the
// mark that it does not cover one) and any extra values the caller binds
// (such as the client a forwarded request counts against). A verifier
// accepts a signature once, within Window of its timestamp: a request seen
// on the wire can be neither replayed nor turned into another request.
// Node-to-node traffic stays plain HTTP unless the operator puts it behind
// TLS, so bodies are still readable there; what this removes is the static
// token a passive listener could reuse at will.
package peersig

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header carries a request's signature: "t=UNIX,n=NONCE,b=BODY,s=HMAC".
const Header = "X-Conclave-Signature"

// UnsignedBody is the body digest of a signature that does not cover the
// body: for streams too large to hold, whose content the handler verifies
// itself (a content-addressed upload).
const UnsignedBody = "-"

// Window is how far a signature's timestamp may be from the verifier's
// clock, either way: request latency plus the clock skew between nodes.
const Window = 60 * time.Second

// Errors Verify wraps.
var (
	ErrMissing = errors.New("peersig: request is not signed")
	ErrInvalid = errors.New("peersig: invalid signature")
	ErrExpired = errors.New("peersig: signature outside its time window")
	ErrReplay  = errors.New("peersig: signature already used")
)

// Key derives the signing key for one purpose from the cluster key
// (HMAC-SHA256), so the cluster key itself never signs or travels, and a
// signature for one purpose is worthless for another. It returns nil for an
// empty cluster key.
func Key(clusterKey []byte, purpose string) []byte {
	if len(clusterKey) == 0 {
		return nil
	}
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("conclave peer signature v1\x00" + purpose))
	return m.Sum(nil)
}

// BodyDigest is the digest a signature binds for body b.
func BodyDigest(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

// Sign sets h's signature for a request with the given method, request URI
// (path and query, as the receiver's http.Request.RequestURI sees it), body
// digest (BodyDigest or UnsignedBody) and extra bound values, signed with
// key at now.
func Sign(h http.Header, key []byte, now time.Time, method, uri, body string, extra ...string) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	t := strconv.FormatInt(now.Unix(), 10)
	n := hex.EncodeToString(nonce[:])
	h.Set(Header, "t="+t+",n="+n+",b="+body+",s="+mac(key, t, n, method, uri, body, extra))
}

func mac(key []byte, t, n, method, uri, body string, extra []string) string {
	m := hmac.New(sha256.New, key)
	for _, f := range append([]string{t, n, method, uri, body}, extra...) {
		// Length-prefixed, so no two field lists encode alike.
		fmt.Fprintf(m, "%d:%s\n", len(f), f)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Signature is a parsed signature header.
type Signature struct {
	t, n, body, sig string
	unix            int64
}

// Parse parses h's signature; ok is false when there is none or it is
// malformed.
func Parse(h http.Header) (Signature, bool) {
	var s Signature
	v := h.Get(Header)
	if v == "" {
		return s, false
	}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "t":
			s.t = val
		case "n":
			s.n = val
		case "b":
			s.body = val
		case "s":
			s.sig = val
		}
	}
	u, err := strconv.ParseInt(s.t, 10, 64)
	if err != nil || len(s.n) != 32 || s.body == "" || len(s.sig) != 64 {
		return Signature{}, false
	}
	s.unix = u
	return s, true
}

// CoversBody reports whether the signature binds a body digest.
func (s Signature) CoversBody() bool { return s.body != UnsignedBody }

// Body is the body digest the signature binds (or UnsignedBody).
func (s Signature) Body() string { return s.body }

// Verifier checks signatures made with one key and remembers the nonces it
// accepted for long enough that none is accepted twice.
type Verifier struct {
	key []byte
	now func() time.Time

	mu        sync.Mutex
	cur, prev map[string]struct{} // nonces accepted in this and the last period
	rotated   time.Time
}

// NewVerifier returns a verifier for key; nil when key is empty (nothing
// verifies). now is the clock (time.Now when nil).
func NewVerifier(key []byte, now func() time.Time) *Verifier {
	if len(key) == 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{key: key, now: now, cur: map[string]struct{}{}, prev: map[string]struct{}{}, rotated: now()}
}

// Verify checks s for a request with the given method, request URI, body
// digest (what the receiver computed: BodyDigest of the body it read, or
// UnsignedBody when it did not read it, which matches only a signature
// that does not cover the body) and extra values, and consumes its nonce.
func (v *Verifier) Verify(s Signature, method, uri, body string, extra ...string) error {
	if v == nil {
		return ErrMissing
	}
	if s.sig == "" {
		return ErrMissing
	}
	if body != s.body {
		return fmt.Errorf("%w: body digest differs", ErrInvalid)
	}
	want := mac(v.key, s.t, s.n, method, uri, s.body, extra)
	if !hmac.Equal([]byte(want), []byte(s.sig)) {
		return ErrInvalid
	}
	now := v.now()
	if d := now.Sub(time.Unix(s.unix, 0)); d > Window || d < -Window {
		return fmt.Errorf("%w (%v off)", ErrExpired, d.Round(time.Second))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	// Two generations, rotated every 2·Window: a nonce stays at least 2·Window
	// after it was accepted, longer than any timestamp the window accepts
	// (at most Window ahead of that moment) stays acceptable.
	if now.Sub(v.rotated) >= 2*Window {
		v.prev, v.cur, v.rotated = v.cur, make(map[string]struct{}, len(v.cur)), now
	}
	if _, ok := v.cur[s.n]; ok {
		return ErrReplay
	}
	if _, ok := v.prev[s.n]; ok {
		return ErrReplay
	}
	v.cur[s.n] = struct{}{}
	return nil
}
