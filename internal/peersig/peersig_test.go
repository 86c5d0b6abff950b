package peersig

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	key := Key([]byte("cluster secret"), "admin")
	clock := time.Unix(1_800_000_000, 0)
	v := NewVerifier(key, func() time.Time { return clock })
	body := BodyDigest([]byte(`{"op":"drain"}`))
	sign := func(k []byte, at time.Time, method, uri, b string, extra ...string) Signature {
		h := http.Header{}
		Sign(h, k, at, method, uri, b, extra...)
		s, ok := Parse(h)
		if !ok {
			t.Fatalf("Parse(%q) failed", h.Get(Header))
		}
		return s
	}

	s := sign(key, clock, "POST", "/admin/v1/apply", body, "c1")
	if err := v.Verify(s, "POST", "/admin/v1/apply", body, "c1"); err != nil {
		t.Fatalf("a fresh signature: %v", err)
	}
	if err := v.Verify(s, "POST", "/admin/v1/apply", body, "c1"); !errors.Is(err, ErrReplay) {
		t.Errorf("the same signature again: %v, want ErrReplay", err)
	}

	for name, tc := range map[string]struct {
		sig               Signature
		method, uri, body string
		extra             string
		want              error
	}{
		"another method":     {sign(key, clock, "POST", "/a", body, "c"), "PUT", "/a", body, "c", ErrInvalid},
		"another path":       {sign(key, clock, "POST", "/a", body, "c"), "POST", "/b", body, "c", ErrInvalid},
		"another query":      {sign(key, clock, "POST", "/a?x=1", body, "c"), "POST", "/a?x=2", body, "c", ErrInvalid},
		"another body":       {sign(key, clock, "POST", "/a", body, "c"), "POST", "/a", BodyDigest([]byte("{}")), "c", ErrInvalid},
		"body not read":      {sign(key, clock, "POST", "/a", body, "c"), "POST", "/a", UnsignedBody, "c", ErrInvalid},
		"unsigned body read": {sign(key, clock, "PUT", "/a", UnsignedBody, "c"), "PUT", "/a", body, "c", ErrInvalid},
		"another extra":      {sign(key, clock, "POST", "/a", body, "c"), "POST", "/a", body, "d", ErrInvalid},
		"another purpose":    {sign(Key([]byte("cluster secret"), "api"), clock, "POST", "/a", body, "c"), "POST", "/a", body, "c", ErrInvalid},
		"another cluster":    {sign(Key([]byte("other secret"), "admin"), clock, "POST", "/a", body, "c"), "POST", "/a", body, "c", ErrInvalid},
		"too old":            {sign(key, clock.Add(-Window-time.Second), "POST", "/a", body, "c"), "POST", "/a", body, "c", ErrExpired},
		"too far ahead":      {sign(key, clock.Add(Window+time.Second), "POST", "/a", body, "c"), "POST", "/a", body, "c", ErrExpired},
		"old but in window":  {sign(key, clock.Add(-Window+time.Second), "POST", "/a", body, "c"), "POST", "/a", body, "c", nil},
		"unsigned body":      {sign(key, clock, "PUT", "/a", UnsignedBody, "c"), "PUT", "/a", UnsignedBody, "c", nil},
	} {
		err := v.Verify(tc.sig, tc.method, tc.uri, tc.body, tc.extra)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}

	var nilV *Verifier
	if err := nilV.Verify(s, "POST", "/admin/v1/apply", body, "c1"); !errors.Is(err, ErrMissing) {
		t.Errorf("a nil verifier (no cluster key) accepted: %v", err)
	}
	if NewVerifier(Key(nil, "admin"), nil) != nil || Key(nil, "admin") != nil {
		t.Error("an empty cluster key gave a key")
	}
}

// TestReplayAcrossRotations checks that a signature accepted once is never
// accepted again while its timestamp is in the window, however the nonce
// generations rotate in between.
func TestReplayAcrossRotations(t *testing.T) {
	key := Key([]byte("k"), "admin")
	clock := time.Unix(1_800_000_000, 0)
	v := NewVerifier(key, func() time.Time { return clock })
	// Signed Window ahead of the verifier's clock: acceptable until 2·Window
	// from now, the longest life a signature can have.
	h := http.Header{}
	Sign(h, key, clock.Add(Window), "POST", "/a", UnsignedBody)
	s, _ := Parse(h)
	if err := v.Verify(s, "POST", "/a", UnsignedBody); err != nil {
		t.Fatal(err)
	}
	for step := time.Duration(0); step <= 2*Window; step += Window / 8 {
		clock = time.Unix(1_800_000_000, 0).Add(step)
		// Other traffic drives the rotations.
		o := http.Header{}
		Sign(o, key, clock, "POST", "/b", UnsignedBody)
		os, _ := Parse(o)
		if err := v.Verify(os, "POST", "/b", UnsignedBody); err != nil {
			t.Fatalf("at +%v, fresh traffic: %v", step, err)
		}
		if err := v.Verify(s, "POST", "/a", UnsignedBody); !errors.Is(err, ErrReplay) {
			t.Fatalf("at +%v the replay gave %v, want ErrReplay", step, err)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	for _, v := range []string{
		"",
		"t=1,n=00,b=-,s=00",
		"t=x,n=00000000000000000000000000000000,b=-,s=0000000000000000000000000000000000000000000000000000000000000000",
		"n=00000000000000000000000000000000,b=-,s=0000000000000000000000000000000000000000000000000000000000000000",
		"t=1,n=00000000000000000000000000000000,s=0000000000000000000000000000000000000000000000000000000000000000",
		"garbage",
	} {
		h := http.Header{}
		if v != "" {
			h.Set(Header, v)
		}
		if _, ok := Parse(h); ok {
			t.Errorf("Parse(%q) accepted", v)
		}
	}
}
