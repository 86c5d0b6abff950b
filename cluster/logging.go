package cluster

import (
	"context"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// slogHandler forwards protoactor's slog records to an hclog logger.
type slogHandler struct {
	log   hclog.Logger
	attrs []any
}

func (h slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.GetLevel() <= slogToHclog(l) && slogToHclog(l) != hclog.NoLevel
}

func (h slogHandler) Handle(_ context.Context, r slog.Record) error {
	args := append([]any(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		args = append(args, a.Key, a.Value.String())
		return true
	})
	h.log.Log(slogToHclog(r.Level), r.Message, args...)
	return nil
}

func (h slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := slogHandler{log: h.log, attrs: append([]any(nil), h.attrs...)}
	for _, a := range as {
		n.attrs = append(n.attrs, a.Key, a.Value.String())
	}
	return n
}

func (h slogHandler) WithGroup(name string) slog.Handler {
	return slogHandler{log: h.log.Named(name), attrs: h.attrs}
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

// NewLogger returns an hclog logger writing to w at level ("trace", "debug",
// "info", "warn", "error"; "" means info) — for cmd/ and tests.
func NewLogger(name string, w io.Writer, level string) hclog.Logger {
	lv := hclog.LevelFromString(level)
	if lv == hclog.NoLevel {
		lv = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: w, Level: lv})
}
