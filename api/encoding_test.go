package api

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func gzipped(t *testing.T, s string) string {
	return compressed(t, s, func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
}

func deflated(t *testing.T, s string) string {
	return compressed(t, s, func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })
}

// compressed is s through the writer newW makes.
func compressed(t *testing.T, s string, newW func(io.Writer) io.WriteCloser) string {
	t.Helper()
	var b bytes.Buffer
	zw := newW(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A compressed body is served as its plain twin; an unknown coding is a 415
// naming it, a corrupt stream a 400, and a body that expands past the size
// limit a 413 however small it was on the wire. A leading byte order mark
// is ignored (RFC 8259 §8.1).
func TestContentEncoding(t *testing.T) {
	f := newFixture(t, DefaultConfig(), nil)
	plain := fmt.Sprintf(`{"model":%q,"prompt":"the cluster","max_tokens":6,"temperature":0}`, f.id)
	resp, want := f.do(t, "POST", "/v1/completions", plain)
	if resp.StatusCode != 200 {
		t.Fatalf("plain: %d %s", resp.StatusCode, want)
	}
	text := func(b []byte) string {
		t.Helper()
		i := bytes.Index(b, []byte(`"text":`))
		if i < 0 {
			t.Fatalf("no text in %s", b)
		}
		return string(b[i : i+bytes.IndexByte(b[i+8:], '"')+9])
	}
	for _, c := range []struct{ name, enc, body string }{
		{"gzip", "gzip", gzipped(t, plain)},
		{"x-gzip", "X-GZIP", gzipped(t, plain)},
		{"deflate", "deflate", deflated(t, plain)},
		{"identity", "identity", plain},
		{"two codings", "deflate, gzip", gzipped(t, deflated(t, plain))},
		{"two gzip members", "gzip", gzipped(t, plain[:10]) + gzipped(t, plain[10:])},
		{"empty list elements", "gzip, ,identity,", gzipped(t, plain)},
		{"byte order mark", "", "\uFEFF" + plain},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, got := f.do(t, "POST", "/v1/completions", c.body, "Content-Encoding", c.enc)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, got)
			}
			if text(got) != text(want) {
				t.Fatalf("text %s, want %s", text(got), text(want))
			}
		})
	}
	// Two field lines make one list (RFC 9110 §5.3).
	req, _ := http.NewRequest("POST", f.http.URL+"/v1/completions", strings.NewReader(gzipped(t, gzipped(t, plain))))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("Content-Encoding", "gzip")
	req.Header.Add("Content-Encoding", "gzip")
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || text(got) != text(want) {
		t.Errorf("two Content-Encoding lines: %d %s", resp.StatusCode, got)
	}
	const inv = "invalid_request_error"
	bomb := gzipped(t, fmt.Sprintf(`{"model":%q,"prompt":"a","user":"%s"}`, f.id, strings.Repeat("x", 8<<20)))
	if len(bomb) > 64<<10 {
		t.Fatalf("bomb of %d bytes", len(bomb))
	}
	for _, c := range []struct {
		name, enc, body string
		status          int
		code            string
	}{
		{"brotli", "br", plain, 415, "unsupported_content_encoding"},
		{"unknown in a list", "gzip, zstd", gzipped(t, plain), 415, "unsupported_content_encoding"},
		{"not gzip", "gzip", plain, 400, "invalid_content_encoding"},
		{"truncated gzip", "gzip", gzipped(t, plain)[:20], 400, "invalid_content_encoding"},
		{"not deflate", "deflate", gzipped(t, plain), 400, "invalid_content_encoding"},
		{"bytes after deflate", "deflate", deflated(t, plain) + "garbage", 400, "invalid_content_encoding"},
		{"bytes after gzip", "gzip", gzipped(t, plain) + "xy", 400, "invalid_content_encoding"},
		{"a header's worth after gzip", "gzip", gzipped(t, plain) + "garbage bytes", 400, "invalid_content_encoding"},
		{"expands past the limit", "gzip", bomb, 413, "request_too_large"},
		{"three codings", "gzip, gzip, gzip", gzipped(t, gzipped(t, gzipped(t, plain))), 415, "unsupported_content_encoding"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := f.do(t, "POST", "/v1/completions", c.body, "Content-Encoding", c.enc)
			checkError(t, resp, body, c.status, inv, c.code, "")
			if strings.HasPrefix(c.name, "bytes after") || strings.Contains(c.name, "after gzip") {
				if !strings.Contains(string(body), "follow the end of the stream") {
					t.Errorf("%s: %s, want the trailing bytes named", c.name, body)
				}
			}
			if c.status == 415 && resp.Header.Get("Accept-Encoding") != "gzip, deflate" {
				t.Errorf("415 with Accept-Encoding %q, want the codings undone", resp.Header.Get("Accept-Encoding"))
			}
		})
	}
}
