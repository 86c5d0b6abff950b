package cluster_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
)

// TestSlogLoggerJSON checks that slog records written through SlogLogger
// come out as the hclog logger's JSON lines with their values typed, groups
// flattened, and the logger's level applied.
func TestSlogLoggerJSON(t *testing.T) {
	var buf bytes.Buffer
	log := cluster.SlogLogger(cluster.NewLoggerFormat("conclave.api", &buf, "info", true))
	log.Debug("hidden")
	log.With("request_id", "r1").Warn("routing failed", "attempt", 3, "ok", false, "ratio", 0.5,
		"waited", 1500*time.Millisecond, "error", errors.New("boom"), slog.Group("peer", "node", "n2", "port", 9000))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line (debug filtered out), got %q", buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	for k, want := range map[string]any{
		"@level": "warn", "@module": "conclave.api", "@message": "routing failed", "request_id": "r1",
		"attempt": 3.0, "ok": false, "ratio": 0.5, "waited": "1.5s", "error": "boom", "peer.node": "n2", "peer.port": 9000.0,
	} {
		if rec[k] != want {
			t.Errorf("%s = %#v, want %#v (line %s)", k, rec[k], want, lines[0])
		}
	}
}

// TestSlogLoggerText checks the text format carries the same record.
func TestSlogLoggerText(t *testing.T) {
	var buf bytes.Buffer
	cluster.SlogLogger(cluster.NewLogger("conclave.api", &buf, "debug")).Info("draining the API", "in_flight", 2)
	if got := buf.String(); !strings.Contains(got, "[INFO]  conclave.api: draining the API: in_flight=2") {
		t.Errorf("text line %q", got)
	}
}

// TestSlogLoggerJSONOddValues: a NaN or infinite float is written as text
// (hclog dropped the whole record it could not encode as JSON), and
// WithGroup prefixes the keys that follow.
func TestSlogLoggerJSONOddValues(t *testing.T) {
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		var buf bytes.Buffer
		cluster.SlogLogger(cluster.NewLoggerFormat("conclave.api", &buf, "info", true)).Error("request failed", "request_id", "r1", "tokens_per_s", f)
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec["@message"] != "request failed" || rec["tokens_per_s"] != fmt.Sprint(f) {
			t.Errorf("%v: record %q (%v)", f, buf.String(), err)
		}
	}
	var buf bytes.Buffer
	cluster.SlogLogger(cluster.NewLoggerFormat("conclave.api", &buf, "info", true)).WithGroup("req").With("id", "r2").Info("done", "tokens", 7)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec["req.id"] != "r2" || rec["req.tokens"] != 7.0 || rec["@module"] != "conclave.api" {
		t.Errorf("grouped record %q (%v)", buf.String(), err)
	}
}
