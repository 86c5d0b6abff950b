package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conclave-ai/conclave/model/synth"
)

// benchJSON is the part of `bench model --json` the tests check.
type benchJSON struct {
	Model struct {
		FileBytes     int64 `json:"file_bytes"`
		ParamsActive  int64 `json:"params_active"`
		BytesPerToken int64 `json:"bytes_per_token"`
	} `json:"model"`
	Threads      int   `json:"threads"`
	KVCacheBytes int64 `json:"kv_cache_bytes"`
	Prefill      []struct {
		Name         string    `json:"name"`
		Tokens       int       `json:"tokens"`
		TokensPerSec float64   `json:"tokens_per_s"`
		Samples      []float64 `json:"samples_tokens_per_s"`
		GFLOPs       float64   `json:"gflops"`
	} `json:"prefill"`
	Decode *struct {
		Name         string  `json:"name"`
		Tokens       int     `json:"tokens"`
		TokensPerSec float64 `json:"tokens_per_s"`
		BandwidthGBs float64 `json:"bandwidth_gbs"`
	} `json:"decode"`
	PeakRSS  int64   `json:"peak_rss_bytes"`
	RSSRatio float64 `json:"rss_ratio"`
	MemBWGBs float64 `json:"mem_bandwidth_gbs"`
}

func tinyModel(t *testing.T) string {
	t.Helper()
	c, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := synth.Write(c, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBenchModelJSON(t *testing.T) {
	path := tinyModel(t)
	out := mustCLI(t, "bench", "model", "--model", path, "--prompt", "8", "--gen", "4", "--reps", "2",
		"--threads", "2", "--membw-mib", "1", "--membw-reps", "2", "--json")
	r := decodeJSON[benchJSON](t, out)
	if r.Model.FileBytes <= 0 || r.Model.ParamsActive <= 0 || r.Model.BytesPerToken <= 0 || r.KVCacheBytes <= 0 || r.Threads != 2 {
		t.Errorf("model fields: %+v, kv %d, threads %d", r.Model, r.KVCacheBytes, r.Threads)
	}
	if len(r.Prefill) != 1 || r.Prefill[0].Name != "pp8" || r.Prefill[0].Tokens != 8 ||
		!(r.Prefill[0].TokensPerSec > 0) || !(r.Prefill[0].GFLOPs > 0) || len(r.Prefill[0].Samples) != 2 {
		t.Errorf("prefill: %+v", r.Prefill)
	}
	if d := r.Decode; d == nil || d.Name != "tg4" || d.Tokens != 4 || !(d.TokensPerSec > 0) || !(d.BandwidthGBs > 0) {
		t.Errorf("decode: %+v", d)
	}
	if _, err := os.Stat("/proc/self/status"); err == nil && (r.PeakRSS <= 0 || !(r.RSSRatio > 0)) {
		t.Errorf("peak RSS %d, ratio %v", r.PeakRSS, r.RSSRatio)
	}
	if !(r.MemBWGBs > 0) {
		t.Errorf("mem_bandwidth_gbs %v", r.MemBWGBs)
	}
}

func TestBenchModelTable(t *testing.T) {
	path := tinyModel(t)
	out := mustCLI(t, "bench", "model", "--model", path, "--prompt", "4,8", "--gen", "2", "--reps", "1", "--no-membw", "--no-warmup")
	for _, want := range []string{"pp4", "pp8", "tg2", "tok/s", "GFLOP/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchCompare(t *testing.T) {
	path := tinyModel(t)
	ours := writeFile(t, "ours.json", []byte(mustCLI(t, "bench", "model", "--model", path, "--prompt", "8", "--gen", "4",
		"--reps", "1", "--threads", "2", "--no-membw", "--json")))
	theirs := writeFile(t, "llama.json", []byte(`[
  {"build_commit": "de3ff81", "n_threads": 2, "type_k": "f16", "type_v": "f16", "flash_attn": -1,
   "n_prompt": 8, "n_gen": 0, "n_depth": 0, "avg_ts": 100.0, "stddev_ts": 1.0, "samples_ns": [1, 2]},
  {"build_commit": "de3ff81", "n_threads": 2, "type_k": "f16", "type_v": "f16", "flash_attn": -1,
   "n_prompt": 0, "n_gen": 4, "n_depth": 0, "avg_ts": 50.0, "stddev_ts": 0.5, "samples_ns": [1, 2]}
]`))
	out := mustCLI(t, "bench", "compare", "--ours", ours, "--llamacpp", theirs)
	for _, want := range []string{"pp8", "tg4", "conclave/llama.cpp", "decode weight traffic"} {
		if !strings.Contains(out, want) {
			t.Errorf("comparison lacks %q:\n%s", want, out)
		}
	}
	// (A busy machine may add a warning about noise; setup mismatches must not.)
	if strings.Contains(out, "differ") || strings.Contains(out, "not compared") {
		t.Errorf("unexpected setup warnings:\n%s", out)
	}
}

func TestBenchErrors(t *testing.T) {
	path := tinyModel(t)
	for name, args := range map[string][]string{
		"no-command":    {"bench"},
		"unknown":       {"bench", "fly"},
		"no-model":      {"bench", "model", "--prompt", "8"},
		"bad-prompt":    {"bench", "model", "--model", path, "--prompt", "8,x"},
		"zero-prompt":   {"bench", "model", "--model", path, "--prompt", "0"},
		"too-long":      {"bench", "model", "--model", path, "--prompt", "100000"},
		"nothing":       {"bench", "model", "--model", path, "--prompt", "", "--gen", "0"},
		"bad-kv":        {"bench", "model", "--model", path, "--kv-type", "q4"},
		"compare-empty": {"bench", "compare"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, stderr, code := cli(t, args...); code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
		})
	}
	bad := writeFile(t, "bad.json", []byte(`{"not": "an array"}`))
	ours := writeFile(t, "ours.json", []byte(`{}`))
	if _, _, code := cli(t, "bench", "compare", "--ours", ours, "--llamacpp", bad); code != 1 {
		t.Errorf("compare with bad llama-bench JSON: exit %d, want 1", code)
	}
}
