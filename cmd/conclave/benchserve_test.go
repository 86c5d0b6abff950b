package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeStreamServer is an OpenAI-compatible server that streams max_tokens
// one-word chunks at once, with usage (prompt_tokens 10) and [DONE].
func fakeStreamServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			fmt.Fprint(w, `{"object":"list","data":[{"id":"fake"}]}`)
			return
		}
		var body struct {
			MaxTokens int `json:"max_tokens"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.URL.Path != "/v1/chat/completions" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"type":"invalid_request_error","message":"bad"}}`)
			return
		}
		for range body.MaxTokens {
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"x \"}}]}\n\n")
			w.(http.Flusher).Flush()
		}
		fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n"+
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":%d}}\n\ndata: [DONE]\n\n", body.MaxTokens)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// serveJSON is the part of `bench serve --json` the tests check.
type serveJSON struct {
	Schema string `json:"schema"`
	Target struct {
		Model string `json:"model"`
	} `json:"target"`
	Config struct {
		Requests int    `json:"requests"`
		Output   string `json:"output"`
	} `json:"config"`
	Levels []struct {
		Mode             string  `json:"mode"`
		Concurrency      int     `json:"concurrency"`
		Requests         int     `json:"requests"`
		Completed        int     `json:"completed"`
		OutputTokens     int     `json:"output_tokens"`
		PromptTokens     int     `json:"prompt_tokens"`
		OutputTokensPerS float64 `json:"output_tokens_per_s"`
		TTFT             struct {
			N   int     `json:"n"`
			P50 float64 `json:"p50"`
		} `json:"ttft_ms"`
		PerTurn []struct {
			Turn int `json:"turn"`
		} `json:"per_turn"`
	} `json:"levels"`
	Comparison *struct {
		Levels []struct {
			Level  string `json:"level"`
			Ratios []struct {
				Metric string   `json:"metric"`
				Old    float64  `json:"old"`
				New    float64  `json:"new"`
				Ratio  *float64 `json:"ratio"`
			} `json:"ratios"`
		} `json:"levels"`
		Missing []string `json:"missing"`
	} `json:"comparison"`
}

func TestBenchServe(t *testing.T) {
	srv := fakeStreamServer(t)
	dir := t.TempDir()
	oldJSON, md, png := filepath.Join(dir, "old.json"), filepath.Join(dir, "old.md"), filepath.Join(dir, "charts")
	out := mustCLI(t, "bench", "serve", "--url", srv.URL, "--concurrency", "1,2", "--requests", "3",
		"--max-tokens", "4", "--prompt-dist", "uniform:5-9", "--ignore-eos", "--out", oldJSON, "--md", md, "--png-dir", png)
	if !strings.Contains(out, "| c=1 |") || !strings.Contains(out, "| c=2 |") {
		t.Errorf("stdout is not the Markdown table:\n%s", out)
	}
	if data, err := os.ReadFile(md); err != nil || string(data) != out {
		t.Errorf("--md differs from stdout (%v)", err)
	}
	data, err := os.ReadFile(oldJSON)
	if err != nil {
		t.Fatal(err)
	}
	old := decodeJSON[serveJSON](t, string(data))
	if old.Schema != "conclave.bench.serve/v1" || old.Target.Model != "fake" || len(old.Levels) != 2 {
		t.Fatalf("report %+v", old)
	}
	for _, l := range old.Levels {
		if l.Requests != 3 || l.Completed != 3 || l.OutputTokens != 12 || l.PromptTokens != 30 || l.TTFT.N != 3 {
			t.Errorf("level %+v", l)
		}
	}
	for _, name := range []string{"throughput.png", "requests.png", "ttft.png", "tpot.png"} {
		if b, err := os.ReadFile(filepath.Join(png, name)); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s: %v", name, err)
		}
	}

	// Compare a second sweep with the first: shared levels get ratios.
	out = mustCLI(t, "bench", "serve", "--url", srv.URL, "--concurrency", "2,4", "--requests", "3",
		"--max-tokens", "4", "--compare", oldJSON, "--json")
	rep := decodeJSON[serveJSON](t, out)
	c := rep.Comparison
	if c == nil || len(c.Levels) != 1 || c.Levels[0].Level != "c=2" || len(c.Missing) != 2 {
		t.Fatalf("comparison %+v", c)
	}
	found := false
	for _, r := range c.Levels[0].Ratios {
		if r.Metric == "output_tokens_per_s" {
			found = true
			if r.Old != old.Levels[1].OutputTokensPerS || r.New != rep.Levels[0].OutputTokensPerS || r.Ratio == nil || *r.Ratio != r.New/r.Old {
				t.Errorf("ratio %+v", r)
			}
		}
	}
	if !found {
		t.Error("no output_tokens_per_s ratio")
	}
	md2 := mustCLI(t, "bench", "serve", "--url", srv.URL, "--concurrency", "2", "--requests", "2", "--max-tokens", "2", "--compare", oldJSON)
	if !strings.Contains(md2, "### new / old") || !strings.Contains(md2, "| request_throughput (higher is better) |") {
		t.Errorf("markdown comparison missing:\n%s", md2)
	}
}

func TestBenchServeModes(t *testing.T) {
	srv := fakeStreamServer(t)
	t.Run("duration without requests", func(t *testing.T) {
		rep := decodeJSON[serveJSON](t, mustCLI(t, "bench", "serve", "--url", srv.URL, "--duration", "20ms", "--max-tokens", "2", "--json"))
		if rep.Config.Requests != 0 || len(rep.Levels) != 1 || rep.Levels[0].Requests < 1 || rep.Levels[0].Completed != rep.Levels[0].Requests {
			t.Errorf("report %+v", rep)
		}
	})
	t.Run("sessions", func(t *testing.T) {
		rep := decodeJSON[serveJSON](t, mustCLI(t, "bench", "serve", "--url", srv.URL, "--sessions", "2", "--turns", "3",
			"--prompt-tokens", "40", "--max-tokens", "3", "--json"))
		if len(rep.Levels) != 1 || rep.Levels[0].Mode != "sessions" || rep.Levels[0].Completed != 6 || len(rep.Levels[0].PerTurn) != 3 {
			t.Errorf("report %+v", rep)
		}
	})
	t.Run("rate", func(t *testing.T) {
		rep := decodeJSON[serveJSON](t, mustCLI(t, "bench", "serve", "--url", srv.URL, "--rate", "1000,2000", "--requests", "4",
			"--output-dist", "normal:4,1", "--json"))
		if len(rep.Levels) != 2 || rep.Levels[0].Mode != "rate" || rep.Levels[1].Completed != 4 || rep.Config.Output != "normal:4,1" {
			t.Errorf("report %+v", rep)
		}
	})
}

func TestBenchServeUsage(t *testing.T) {
	notOurs := writeFile(t, "other.json", []byte(`{"schema":"something else"}`))
	for _, args := range [][]string{
		{"--concurrency", "0"},
		{"--concurrency", "x"},
		{"--rate", "-1"},
		{"--prompt-dist", "zipf:1"},
		{"--output-dist", "uniform:9-1"},
		{"--max-tokens", "0"},
		{"--endpoint", "embeddings"},
		{"--url", "ftp://x"},
		{"--requests", "0"},
		{"--sessions", "2", "--turns", "0"},
		{"--compare", notOurs},
		{"stray"},
		{"--concurrency", "2", "--rate", "5"},
		{"--rate", "5", "--sessions", "2"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, stderr, code := cli(t, append([]string{"bench", "serve"}, args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
		})
	}
	t.Run("every request fails", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":{"message":"no such model","type":"invalid_request_error"}}`, http.StatusNotFound)
		}))
		defer srv.Close()
		stdout, stderr, code := cli(t, "bench", "serve", "--url", srv.URL, "--model", "nosuch", "--requests", "2")
		if code != 1 || !strings.Contains(stdout, "http_404") || !strings.Contains(stderr, "every request failed") {
			t.Errorf("exit %d, want 1 with the report on stdout; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})
	t.Run("no server", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		if _, stderr, code := cli(t, "bench", "serve", "--url", url); code != 1 {
			t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr)
		}
	})
}
