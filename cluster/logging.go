package cluster

import (
	"context"
	"io"
	"log/slog"
	"math"

	"github.com/hashicorp/go-hclog"
)

// SlogLogger returns a log/slog logger whose records go to l, in l's format
// and at l's level, so a process's slog users (the API, protoactor) and its
// hclog users (Raft, memberlist, this package) write one stream.
func SlogLogger(l hclog.Logger) *slog.Logger { return slog.New(slogHandler{log: l}) }

// slogHandler forwards slog records (protoactor's, the API's) to an hclog
// logger. Groups prefix their keys ("group.key"). hclog keeps one value per
// key in JSON, so a key repeated in one record keeps its last value.
type slogHandler struct {
	log    hclog.Logger
	attrs  []any
	prefix string // open groups' names, each followed by "."
}

func (h slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.GetLevel() <= slogToHclog(l) && slogToHclog(l) != hclog.NoLevel
}

func (h slogHandler) Handle(_ context.Context, r slog.Record) error {
	args := append([]any(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		args = appendAttr(args, h.prefix, a)
		return true
	})
	h.log.Log(slogToHclog(r.Level), r.Message, args...)
	return nil
}

func (h slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := slogHandler{log: h.log, attrs: append([]any(nil), h.attrs...), prefix: h.prefix}
	for _, a := range as {
		n.attrs = appendAttr(n.attrs, h.prefix, a)
	}
	return n
}

// appendAttr appends a's key and value to args as hclog takes them: numbers
// and booleans as themselves (so JSON logs keep their types), a group's
// attributes under "group.key", everything else as its text.
func appendAttr(args []any, prefix string, a slog.Attr) []any {
	v := a.Value.Resolve()
	if a.Key == "" && v.Kind() != slog.KindGroup {
		return args
	}
	key := prefix + a.Key
	switch v.Kind() {
	case slog.KindGroup:
		if a.Key != "" {
			prefix = key + "."
		}
		for _, g := range v.Group() {
			args = appendAttr(args, prefix, g)
		}
		return args
	case slog.KindInt64:
		return append(args, key, v.Int64())
	case slog.KindUint64:
		return append(args, key, v.Uint64())
	case slog.KindFloat64:
		if f := v.Float64(); !math.IsNaN(f) && !math.IsInf(f, 0) {
			return append(args, key, f)
		}
		// JSON has no NaN or ±Inf, and hclog drops a record it cannot
		// encode: as text.
		return append(args, key, v.String())
	case slog.KindBool:
		return append(args, key, v.Bool())
	}
	return append(args, key, v.String())
}

func (h slogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return slogHandler{log: h.log, attrs: h.attrs, prefix: h.prefix + name + "."}
}

func slogToHclog(l slog.Level) hclog.Level {
	switch {
	case l >= slog.LevelError:
		return hclog.Error
	case l >= slog.LevelWarn:
		return hclog.Warn
	case l >= slog.LevelInfo:
		return hclog.Info
	default:
		return hclog.Debug
	}
}

// NewLogger returns an hclog logger writing text lines to w at level
// ("trace", "debug", "info", "warn", "error"; "" means info) — for cmd/ and
// tests.
func NewLogger(name string, w io.Writer, level string) hclog.Logger {
	return NewLoggerFormat(name, w, level, false)
}

// NewLoggerFormat is NewLogger with a choice of format: json writes one JSON
// object per line ("@timestamp", "@level", "@module", "@message" and the
// record's keys), for log shippers.
func NewLoggerFormat(name string, w io.Writer, level string, json bool) hclog.Logger {
	lv := hclog.LevelFromString(level)
	if lv == hclog.NoLevel {
		lv = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: w, Level: lv, JSONFormat: json})
}
