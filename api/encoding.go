package api

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// decodeContent undoes the request's Content-Encoding (RFC 9110 §8.4): a
// comma-separated list of the codings applied in order, so they come off
// last first. gzip (and its old alias x-gzip) and deflate (zlib, as HTTP
// means it) are understood, identity is nothing; anything else is a 415 that
// names it. The decoded body is held to limit bytes like a plain one (a
// small compressed body may expand to gigabytes), and a corrupt stream is a
// 400 that says which coding failed.
func decodeContent(header string, body []byte, limit int64) ([]byte, *Error) {
	if strings.TrimSpace(header) == "" {
		return body, nil
	}
	var codings []string
	for _, c := range strings.Split(header, ",") {
		// Empty list elements are to be ignored (RFC 9110 §5.6.1.2), and
		// identity changes nothing.
		if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
			codings = append(codings, c)
		}
	}
	// Each layer may expand to the limit: stacked ones would multiply the
	// work of one small request (a stored layer costs little on the wire).
	if len(codings) > maxCodings {
		return nil, &Error{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Code: "unsupported_content_encoding",
			Message: fmt.Sprintf("Content-Encoding lists %d codings; at most %d are undone", len(codings), maxCodings)}
	}
	for i := len(codings) - 1; i >= 0; i-- {
		c := codings[i]
		var (
			zr  io.ReadCloser
			err error
		)
		switch c {
		case "gzip", "x-gzip":
			zr, err = newGzipMembers(body)
		case "deflate":
			rd := bytes.NewReader(body)
			if zr, err = zlib.NewReader(rd); err == nil {
				zr = trailing{zr, rd}
			}
		default:
			return nil, &Error{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Code: "unsupported_content_encoding",
				Message: fmt.Sprintf("Content-Encoding %q is not supported; send the body as is, or gzip or deflate it", clip(c, 48))}
		}
		if err == nil {
			body, err = io.ReadAll(io.LimitReader(zr, limit+1))
			zr.Close()
		}
		if err != nil {
			return nil, badRequestCode("", "invalid_content_encoding", "the request body is not valid %s data: %v", c, unwrapEOF(err))
		}
		if int64(len(body)) > limit {
			return nil, &Error{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: "request_too_large",
				Message: fmt.Sprintf("the request body exceeds %d bytes once decoded (Content-Encoding %s)", limit, c)}
		}
	}
	return body, nil
}

// trailing fails a zlib stream's last read when bytes follow the stream
// (its checksum ends it; what comes after is not part of the body).
type trailing struct {
	io.ReadCloser
	rest *bytes.Reader
}

func (t trailing) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF && t.rest.Len() > 0 {
		err = fmt.Errorf("%d bytes follow the end of the stream", t.rest.Len())
	}
	return n, err
}

// gzipMembers reads a gzip body member by member (RFC 1952 lets members
// follow one another), so that bytes after the last complete member that do
// not begin another one are reported as such: gzip.Reader's own multistream
// reading calls a few stray bytes a truncated stream.
type gzipMembers struct {
	z    *gzip.Reader
	rest *bytes.Reader
}

func newGzipMembers(body []byte) (io.ReadCloser, error) {
	rd := bytes.NewReader(body)
	z, err := gzip.NewReader(rd)
	if err != nil {
		return nil, err
	}
	z.Multistream(false)
	return gzipMembers{z, rd}, nil
}

func (g gzipMembers) Read(p []byte) (int, error) {
	for {
		n, err := g.z.Read(p)
		if err != io.EOF {
			return n, err
		}
		if g.rest.Len() == 0 {
			return n, io.EOF
		}
		left := g.rest.Len()
		if rerr := g.z.Reset(g.rest); rerr != nil {
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) || errors.Is(rerr, gzip.ErrHeader) {
				return n, fmt.Errorf("%d bytes follow the end of the stream", left)
			}
			return n, rerr
		}
		g.z.Multistream(false)
		if n > 0 {
			return n, nil
		}
	}
}

func (g gzipMembers) Close() error { return g.z.Close() }

// maxCodings is how many content codings a body may carry.
const maxCodings = 2

// unwrapEOF words a stream that ends early as what it is.
func unwrapEOF(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("the compressed stream is truncated")
	}
	return err
}
