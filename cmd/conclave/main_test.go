package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/gguf"
)

// cli runs the command line in process and returns what it printed and its
// exit code. A panic inside run fails the test: bad input must be an error.
func cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("conclave %s panicked: %v", strings.Join(args, " "), p)
			}
		}()
		code = run(args, &out, &errOut)
	}()
	return out.String(), errOut.String(), code
}

// mustCLI runs the command line and fails the test unless it exits 0.
func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, code := cli(t, args...)
	if code != 0 {
		t.Fatalf("conclave %s: exit %d, stderr:\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// synthModel writes a model with `model synth` (tiny preset plus extra
// flags) into a fresh temporary directory and returns its path.
func synthModel(t *testing.T, extra ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	mustCLI(t, append([]string{"model", "synth", "--preset", "tiny", "--out", path}, extra...)...)
	return path
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
	return v
}

type inspectJSON struct {
	Path         string         `json:"path"`
	Architecture string         `json:"architecture"`
	GGUFVersion  int            `json:"gguf_version"`
	ParamsTotal  int64          `json:"params_total"`
	ParamsActive int64          `json:"params_active"`
	BytesPerTok  int64          `json:"bytes_per_token"`
	Tensors      int            `json:"tensors"`
	TensorTypes  map[string]int `json:"tensor_types"`
	Config       struct {
		Arch       string
		Dim        int
		Layers     int
		Heads      int
		KVHeads    int
		FFN        int
		Experts    int
		TopK       int
		Vocab      int
		Ctx        int
		TiedOutput bool
	} `json:"config"`
}

type logitsJSON struct {
	Tokens    []int32     `json:"tokens"`
	Positions [][]idLogit `json:"positions"`
	Logits    [][]float32 `json:"logits"`
}

type generateJSON struct {
	PromptTokens []int32 `json:"prompt_tokens"`
	Tokens       []int32 `json:"tokens"`
	Text         string  `json:"text"`
	Timings      struct {
		PromptTokens    int `json:"prompt_tokens"`
		GeneratedTokens int `json:"generated_tokens"`
		Threads         int `json:"threads"`
	} `json:"timings"`
}

const eosID = 2 // the synthesized tokenizer's </s>

func inspect(t *testing.T, path string) inspectJSON {
	t.Helper()
	return decodeJSON[inspectJSON](t, mustCLI(t, "model", "inspect", path, "--json"))
}

func generate(t *testing.T, args ...string) generateJSON {
	t.Helper()
	return decodeJSON[generateJSON](t, mustCLI(t, append([]string{"generate", "--json"}, args...)...))
}

func joinIDs(ids []int32) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(int(id))
	}
	return strings.Join(s, ",")
}

func TestSynthThenInspect(t *testing.T) {
	path := synthModel(t)

	t.Run("text", func(t *testing.T) {
		out := mustCLI(t, "model", "inspect", path)
		for _, want := range []string{
			"architecture:  llama (mixture of experts: 4 experts, top-2)",
			"dim 64, 2 layers, 4 heads (2 kv, head dim 16), ffn 96, vocab 512, context 256",
			"parameters:",
			path,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("inspect output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		info := inspect(t, path)
		c := info.Config
		if info.Architecture != "llama" || c.Arch != "llama" {
			t.Errorf("architecture %q / %q, want llama", info.Architecture, c.Arch)
		}
		if c.Dim != 64 || c.Layers != 2 || c.Heads != 4 || c.KVHeads != 2 || c.FFN != 96 || c.Vocab != 512 || c.Ctx != 256 {
			t.Errorf("shape %+v, want the tiny preset", c)
		}
		if c.Experts != 4 || c.TopK != 2 {
			t.Errorf("%d experts top-%d, want 4 top-2", c.Experts, c.TopK)
		}
		if info.Path != path || info.GGUFVersion != 3 || info.Tensors == 0 {
			t.Errorf("path %q version %d tensors %d", info.Path, info.GGUFVersion, info.Tensors)
		}
		// Top-2 of 4 experts: fewer parameters are active than stored.
		if info.ParamsTotal <= 0 || info.ParamsActive <= 0 || info.ParamsActive >= info.ParamsTotal {
			t.Errorf("params total %d active %d", info.ParamsTotal, info.ParamsActive)
		}
		// The tiny preset is F32: 4 bytes per active parameter.
		if info.BytesPerTok != 4*info.ParamsActive {
			t.Errorf("bytes per token %d, want 4 × %d active params", info.BytesPerTok, info.ParamsActive)
		}
		if info.TensorTypes["F32"] == 0 || len(info.TensorTypes) != 1 {
			t.Errorf("tensor types %v, want only F32", info.TensorTypes)
		}
	})
	t.Run("flags before file", func(t *testing.T) {
		if got := decodeJSON[inspectJSON](t, mustCLI(t, "model", "inspect", "--json", path)); got.Config.Dim != 64 {
			t.Errorf("dim %d, want 64", got.Config.Dim)
		}
	})
}

func TestLogitsTopK(t *testing.T) {
	path := synthModel(t)
	for _, kv := range []string{"f16", "f32"} {
		t.Run(kv, func(t *testing.T) {
			got := decodeJSON[logitsJSON](t, mustCLI(t, "logits", "--model", path, "--tokens", "1,5,9", "--top", "3", "--json", "--kv-type", kv))
			if !slices.Equal(got.Tokens, []int32{1, 5, 9}) {
				t.Errorf("tokens %v, want [1 5 9]", got.Tokens)
			}
			if len(got.Positions) != 3 {
				t.Fatalf("%d positions, want 3", len(got.Positions))
			}
			if got.Logits != nil {
				t.Errorf("full logits printed without --full")
			}
			for p, row := range got.Positions {
				if len(row) != 3 {
					t.Fatalf("position %d: %d entries, want 3", p, len(row))
				}
				for i := 1; i < len(row); i++ {
					if row[i].Logit > row[i-1].Logit {
						t.Errorf("position %d not sorted descending: %v", p, row)
					}
				}
				for _, e := range row {
					if e.ID < 0 || e.ID >= 512 {
						t.Errorf("position %d: id %d outside the vocabulary", p, e.ID)
					}
				}
			}
		})
	}
	t.Run("text", func(t *testing.T) {
		out := mustCLI(t, "logits", "--model", path, "--tokens", "1,5,9", "--top", "2")
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 {
			t.Errorf("%d lines, want one per position:\n%s", len(lines), out)
		}
	})
	t.Run("full agrees with top", func(t *testing.T) {
		got := decodeJSON[logitsJSON](t, mustCLI(t, "logits", "--model", path, "--tokens", "1,5,9", "--top", "1", "--json", "--full"))
		if len(got.Logits) != 3 {
			t.Fatalf("%d logit rows, want 3", len(got.Logits))
		}
		for p, row := range got.Logits {
			if len(row) != 512 {
				t.Fatalf("row %d has %d logits, want 512", p, len(row))
			}
			if best := argmax(row); best != got.Positions[p][0].ID {
				t.Errorf("position %d: argmax %d, top-1 %d", p, best, got.Positions[p][0].ID)
			}
		}
	})
}

// argmax returns the index of the largest value, the lowest index on ties.
func argmax(row []float32) int32 {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return int32(best)
}

func TestGenerateDeterministic(t *testing.T) {
	path := synthModel(t)
	args := []string{"--model", path, "--tokens", "1,5,9", "--max-tokens", "8"}
	var first []int32
	for _, threads := range []string{"1", "2", "1", "2"} {
		got := generate(t, append(args, "--threads", threads)...)
		if !slices.Equal(got.PromptTokens, []int32{1, 5, 9}) {
			t.Errorf("prompt tokens %v, want [1 5 9]", got.PromptTokens)
		}
		n := len(got.Tokens)
		if n == 0 || n > 8 || (n < 8 && got.Tokens[n-1] != eosID) {
			t.Fatalf("generated %v: want 8 tokens, or fewer ending in EOS", got.Tokens)
		}
		if got.Timings.GeneratedTokens != n || got.Timings.PromptTokens != 3 {
			t.Errorf("timings count %d prompt / %d generated, want 3 / %d", got.Timings.PromptTokens, got.Timings.GeneratedTokens, n)
		}
		if got.Timings.Threads != atoi(t, threads) {
			t.Errorf("timings report %d threads, want %s", got.Timings.Threads, threads)
		}
		if first == nil {
			first = got.Tokens
		} else if !slices.Equal(got.Tokens, first) {
			t.Errorf("--threads %s generated %v, first run %v", threads, got.Tokens, first)
		}
	}
	t.Run("kv f32", func(t *testing.T) {
		got := generate(t, append(args, "--kv-type", "f32")...)
		if n := len(got.Tokens); n == 0 || n > 8 || (n < 8 && got.Tokens[n-1] != eosID) {
			t.Errorf("generated %v with an F32 cache", got.Tokens)
		}
	})
	t.Run("streaming text", func(t *testing.T) {
		stdout, stderr, code := cli(t, append([]string{"generate"}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.HasSuffix(stdout, "\n") || !strings.Contains(stderr, "generated:") {
			t.Errorf("stdout %q stderr %q", stdout, stderr)
		}
	})
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestGenerateChatPrompt(t *testing.T) {
	path := synthModel(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"plain", nil},
		{"chat", []string{"--chat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := generate(t, append([]string{"--model", path, "--prompt", "hello world", "--max-tokens", "4"}, tc.args...)...)
			if len(got.PromptTokens) < 2 || got.PromptTokens[0] != 1 {
				t.Fatalf("prompt tokens %v, want BOS (1) first", got.PromptTokens)
			}
			if n := count(got.PromptTokens, 1); n != 1 {
				t.Errorf("prompt tokens %v hold BOS %d times, want once", got.PromptTokens, n)
			}
			if len(got.Tokens) == 0 {
				t.Errorf("nothing generated")
			}
		})
	}
}

func count(ids []int32, id int32) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// TestGreedyMatchesTeacherForcing checks that every greedily generated token
// is the argmax of the logits that teacher forcing over prompt + generated
// tokens gives at the position before it.
func TestGreedyMatchesTeacherForcing(t *testing.T) {
	path := synthModel(t)
	prompt := []int32{1, 300, 301, 302}
	for _, kv := range []string{"f16", "f32"} {
		t.Run(kv, func(t *testing.T) {
			gen := generate(t, "--model", path, "--tokens", joinIDs(prompt), "--max-tokens", "12", "--ignore-eos", "--kv-type", kv)
			if len(gen.Tokens) != 12 {
				t.Fatalf("generated %d tokens with --ignore-eos, want 12", len(gen.Tokens))
			}
			all := append(slices.Clone(prompt), gen.Tokens...)
			lg := decodeJSON[logitsJSON](t, mustCLI(t, "logits", "--model", path, "--tokens", joinIDs(all), "--top", "1", "--json", "--full", "--kv-type", kv))
			if len(lg.Logits) != len(all) {
				t.Fatalf("%d logit rows, want %d", len(lg.Logits), len(all))
			}
			for i, tok := range gen.Tokens {
				if want := argmax(lg.Logits[len(prompt)-1+i]); tok != want {
					t.Errorf("step %d: generated %d, teacher-forced argmax %d", i, tok, want)
				}
			}
		})
	}
}

func TestGenerateIgnoreEOS(t *testing.T) {
	path := synthModel(t)
	const n = 200
	base := []string{"--model", path, "--tokens", "1,5,9", "--max-tokens", strconv.Itoa(n)}
	long := generate(t, append(base, "--ignore-eos")...)
	if len(long.Tokens) != n {
		t.Fatalf("--ignore-eos generated %d tokens, want %d", len(long.Tokens), n)
	}
	stopped := generate(t, base...)
	i := slices.Index(long.Tokens, eosID)
	if i < 0 {
		// This seed never produces EOS here: both runs must then agree fully.
		t.Logf("no EOS in %d tokens; checking the runs agree", n)
		if !slices.Equal(stopped.Tokens, long.Tokens) {
			t.Errorf("runs differ without any EOS")
		}
		return
	}
	if !slices.Equal(stopped.Tokens, long.Tokens[:i+1]) {
		t.Errorf("without --ignore-eos got %d tokens, want the %d up to and including the first EOS", len(stopped.Tokens), i+1)
	}
}

// TestGenerateContextLimit: asking for more tokens than the context holds
// stops at the context instead of failing.
func TestGenerateContextLimit(t *testing.T) {
	path := synthModel(t, "--ctx", "32")
	got := generate(t, "--model", path, "--tokens", "1,5,9", "--max-tokens", "100", "--ignore-eos")
	if len(got.Tokens) == 0 || len(got.Tokens)+3 > 32 {
		t.Errorf("generated %d tokens after a 3-token prompt in a context of 32", len(got.Tokens))
	}
}

func TestSynthFlagsOverridePreset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		check func(t *testing.T, info inspectJSON, text string)
	}{
		{"dense", []string{"--experts", "0"}, func(t *testing.T, info inspectJSON, text string) {
			if info.Config.Experts != 0 || !strings.Contains(text, "(dense)") {
				t.Errorf("experts %d, inspect:\n%s", info.Config.Experts, text)
			}
			// Every weight is used per token except the embedding table,
			// of which one row is read (Params does not count it).
			if emb := int64(info.Config.Vocab * info.Config.Dim); info.ParamsTotal-info.ParamsActive != emb {
				t.Errorf("dense model: %d active of %d params, want all but the %d of token_embd", info.ParamsActive, info.ParamsTotal, emb)
			}
		}},
		{"fewer experts clamp top-k", []string{"--experts", "1"}, func(t *testing.T, info inspectJSON, _ string) {
			if info.Config.Experts != 1 || info.Config.TopK != 1 {
				t.Errorf("%d experts top-%d, want 1 top-1", info.Config.Experts, info.Config.TopK)
			}
		}},
		{"q8_0", []string{"--type", "q8_0"}, func(t *testing.T, info inspectJSON, _ string) {
			if info.TensorTypes["Q8_0"] == 0 {
				t.Errorf("tensor types %v, want Q8_0 matrices", info.TensorTypes)
			}
		}},
		{"shape", []string{"--dim", "128", "--layers", "1", "--heads", "8", "--kv-heads", "8", "--ffn", "64", "--vocab", "300", "--ctx", "64", "--experts", "8", "--top-k", "3"},
			func(t *testing.T, info inspectJSON, _ string) {
				c := info.Config
				if c.Dim != 128 || c.Layers != 1 || c.Heads != 8 || c.KVHeads != 8 || c.FFN != 64 || c.Vocab != 300 || c.Ctx != 64 || c.Experts != 8 || c.TopK != 3 {
					t.Errorf("shape %+v", c)
				}
			}},
		{"tied output", []string{"--tied-output"}, func(t *testing.T, info inspectJSON, _ string) {
			if !info.Config.TiedOutput {
				t.Errorf("output not tied")
			}
		}},
		{"legacy experts", []string{"--legacy-experts"}, func(t *testing.T, info inspectJSON, _ string) {
			if info.Config.Experts != 4 {
				t.Errorf("%d experts, want 4", info.Config.Experts)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := synthModel(t, tc.flags...)
			tc.check(t, inspect(t, path), mustCLI(t, "model", "inspect", path))
			got := generate(t, "--model", path, "--tokens", "1,5,9", "--max-tokens", "4", "--ignore-eos")
			if len(got.Tokens) != 4 {
				t.Errorf("generated %v, want 4 tokens", got.Tokens)
			}
		})
	}
}

func TestSynthSeed(t *testing.T) {
	read := func(flags ...string) []byte {
		b, err := os.ReadFile(synthModel(t, flags...))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, c := read(), read(), read("--seed", "7")
	if !bytes.Equal(a, b) {
		t.Errorf("two syntheses of the same preset differ")
	}
	if bytes.Equal(a, c) {
		t.Errorf("--seed 7 wrote the same file as the preset's seed")
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"generate", "-h"}, {"model", "synth", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if _, _, code := cli(t, args...); code != 0 {
				t.Errorf("exit %d, want 0", code)
			}
		})
	}
}

// writeFile writes data to a new file in a temporary directory.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// foreignArchModel writes a valid GGUF whose architecture no loader handles.
func foreignArchModel(t *testing.T) string {
	t.Helper()
	w := gguf.NewWriter(3)
	if err := w.AddKV("general.architecture", "mamba-test"); err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("token_embd.weight", kernels.F32, []uint64{4, 2}, make([]byte, 4*4*2)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "foreign.gguf")
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestErrors(t *testing.T) {
	good := synthModel(t)
	tiny, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := writeFile(t, "truncated.gguf", tiny[:1000])
	noise := make([]byte, 4096)
	for i := range noise { // deterministic garbage, not starting with "GGUF"
		noise[i] = byte(i*7919 + i>>3)
	}
	random := writeFile(t, "random.gguf", noise)
	foreign := foreignArchModel(t)
	missing := filepath.Join(t.TempDir(), "does-not-exist.gguf")
	out := filepath.Join(t.TempDir(), "out.gguf")

	const usage, runtime = 2, 1
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string // substrings of stderr
	}{
		{"no args", nil, usage, []string{"Usage:"}},
		{"unknown command", []string{"frobnicate"}, usage, []string{`unknown command "frobnicate"`}},
		{"model without subcommand", []string{"model"}, usage, []string{"Usage:"}},
		{"unknown model command", []string{"model", "frob"}, usage, []string{`"frob"`}},
		{"unknown flag", []string{"generate", "--bogus"}, usage, []string{"bogus"}},
		{"missing --model", []string{"generate", "--tokens", "1"}, usage, []string{"--model"}},
		{"logits missing --model", []string{"logits", "--tokens", "1"}, usage, []string{"--model"}},
		{"neither prompt nor tokens", []string{"generate", "--model", good}, usage, []string{"--prompt", "--tokens"}},
		{"both prompt and tokens", []string{"generate", "--model", good, "--prompt", "hi", "--tokens", "1"}, usage, []string{"--prompt", "--tokens"}},
		{"token out of vocab", []string{"generate", "--model", good, "--tokens", "1,512"}, usage, []string{"512", "vocabulary"}},
		{"negative token", []string{"logits", "--model", good, "--tokens", "-1"}, usage, []string{"-1"}},
		{"non-numeric token", []string{"generate", "--model", good, "--tokens", "1,two"}, usage, []string{`"two"`}},
		{"empty tokens", []string{"logits", "--model", good, "--tokens", " , "}, usage, []string{"--tokens"}},
		{"bogus kv type", []string{"generate", "--model", good, "--tokens", "1", "--kv-type", "bogus"}, usage, []string{"bogus"}},
		{"logits bogus kv type", []string{"logits", "--model", good, "--tokens", "1", "--kv-type", "q8_0"}, usage, []string{"q8_0"}},
		{"zero threads", []string{"generate", "--model", good, "--tokens", "1", "--threads", "0"}, usage, []string{"--threads"}},
		{"zero batch", []string{"logits", "--model", good, "--tokens", "1", "--batch", "0"}, usage, []string{"--batch"}},
		{"zero max tokens", []string{"generate", "--model", good, "--tokens", "1", "--max-tokens", "0"}, usage, []string{"--max-tokens"}},
		{"zero top", []string{"logits", "--model", good, "--tokens", "1", "--top", "0"}, usage, []string{"--top"}},
		{"negative temperature", []string{"generate", "--model", good, "--tokens", "1", "--temperature", "-1"}, usage, []string{"emperature"}},
		{"non-numeric temperature", []string{"generate", "--model", good, "--tokens", "1", "--temperature", "hot"}, usage, []string{`"hot"`}},
		{"top-p above 1", []string{"generate", "--model", good, "--tokens", "1", "--top-p", "2"}, usage, []string{"op"}},
		{"nonexistent model", []string{"generate", "--model", missing, "--tokens", "1"}, runtime, []string{missing}},
		{"inspect nonexistent", []string{"model", "inspect", missing}, runtime, []string{missing}},
		{"inspect without file", []string{"model", "inspect"}, usage, []string{"FILE"}},
		{"truncated model", []string{"generate", "--model", truncated, "--tokens", "1"}, runtime, []string{truncated}},
		{"inspect truncated", []string{"model", "inspect", truncated}, runtime, []string{truncated}},
		{"random bytes", []string{"logits", "--model", random, "--tokens", "1"}, runtime, []string{random}},
		{"unsupported architecture", []string{"generate", "--model", foreign, "--tokens", "1"}, runtime, []string{"mamba-test"}},
		{"inspect unsupported architecture", []string{"model", "inspect", foreign}, runtime, []string{"mamba-test", foreign}},
		{"logits beyond context", []string{"logits", "--model", synthModel(t, "--ctx", "4"), "--tokens", "1,2,3,4,5"}, runtime, []string{"context"}},
		{"synth without --out", []string{"model", "synth"}, usage, []string{"--out"}},
		{"synth unknown preset", []string{"model", "synth", "--preset", "huge", "--out", out}, usage, []string{`"huge"`}},
		{"synth dim not divisible by heads", []string{"model", "synth", "--dim", "60", "--out", out}, usage, []string{"dim 60"}},
		{"synth top-k above experts", []string{"model", "synth", "--top-k", "9", "--out", out}, usage, []string{"top-9"}},
		{"synth bad type", []string{"model", "synth", "--type", "q4_1", "--out", out}, usage, []string{"Q4_1"}},
		{"synth unknown type", []string{"model", "synth", "--type", "int3", "--out", out}, usage, []string{"--type"}},
		{"synth unwritable out", []string{"model", "synth", "--out", filepath.Join(missing, "x.gguf")}, runtime, []string{"x.gguf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := cli(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing on error", stdout)
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("failed syntheses left %s behind (stat: %v)", out, err)
	}
}

// TestGroupHelp checks that every command group answers the help its usage
// text promises ("conclave COMMAND -h") with its usage on stdout and exit 0,
// and that an unknown command of a group is named as such.
func TestGroupHelp(t *testing.T) {
	for _, group := range []string{"cluster", "expert", "model", "bench"} {
		for _, h := range []string{"-h", "--help", "help"} {
			stdout, stderr, code := cli(t, group, h)
			if code != 0 || !strings.Contains(stdout, "Usage:") || !strings.Contains(stdout, "conclave "+group+" ") {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want the group's usage and exit 0", group, h, code, stdout, stderr)
			}
		}
	}
	_, stderr, code := cli(t, "expert", "frob", "--layer", "0")
	if code != 2 || !strings.Contains(stderr, `unknown expert command "frob"`) {
		t.Errorf("expert frob: exit %d, stderr %q; want the unknown command named", code, stderr)
	}
}
