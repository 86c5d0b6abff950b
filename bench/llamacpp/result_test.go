package llamacpp

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// testdata/llama-bench.json is real `llama-bench -o json` output (build
// de3ff81, the llama.cpp node-llama-cpp 3.22.1 ships) on var/bench.gguf.
func TestParseRealOutput(t *testing.T) {
	f, err := os.Open("testdata/llama-bench.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name())
		if r.Threads != 2 || r.TypeK != "f16" || r.BuildCommit == "" || r.ModelSize <= 0 || r.Samples != 2 || !(r.TokensPerSec > 0) {
			t.Errorf("%s: %+v", r.Name(), r)
		}
	}
	if got := strings.Join(names, ","); got != "pp256,pp512,tg128" {
		t.Errorf("tests %s, want pp256,pp512,tg128", got)
	}
	if r, ok := Find(rs, 0, 128); !ok || r.NGen != 128 {
		t.Errorf("Find tg128 = %+v, %v", r, ok)
	}
	if _, ok := Find(rs, 1024, 0); ok {
		t.Error("found pp1024")
	}
}

func TestParseVariants(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		flash      int
		label      string
	}{
		{"flash-int", `[{"n_prompt": 64, "n_gen": 0, "avg_ts": 1.5, "flash_attn": -1}]`, -1, "pp64"},
		{"flash-bool", `[{"n_prompt": 0, "n_gen": 16, "avg_ts": 1.5, "flash_attn": true}]`, 1, "tg16"},
		{"flash-absent", `[{"n_prompt": 8, "n_gen": 4, "avg_ts": 1.5}]`, 0, "pp8+tg4"},
		{"depth", `[{"n_prompt": 8, "n_gen": 0, "n_depth": 512, "avg_ts": 1.5, "future_field": {"x": 1}}]`, 0, "pp8 @ d512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Parse(strings.NewReader(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 || rs[0].FlashAttn != tc.flash || rs[0].Name() != tc.label {
				t.Errorf("got %+v (%s), want flash %d, %s", rs, rs[0].Name(), tc.flash, tc.label)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":      ``,
		"object":     `{"n_prompt": 1}`,
		"truncated":  `[{"n_prompt": 1, `,
		"no-test":    `[{"n_prompt": 0, "n_gen": 0, "avg_ts": 1}]`,
		"no-rate":    `[{"n_prompt": 8, "n_gen": 0, "avg_ts": 0}]`,
		"flash-word": `[{"n_prompt": 8, "avg_ts": 1, "flash_attn": "maybe"}]`,
		"type":       `[{"n_prompt": "eight", "avg_ts": 1}]`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(strings.NewReader(in)); !errors.Is(err, ErrBadOutput) {
				t.Fatalf("Parse = %v, want ErrBadOutput", err)
			}
		})
	}
}

func ExampleParse() {
	out := `[{"n_threads": 2, "n_prompt": 512, "n_gen": 0, "avg_ts": 210.5, "stddev_ts": 1.2},
	         {"n_threads": 2, "n_prompt": 0, "n_gen": 128, "avg_ts": 30.25, "stddev_ts": 0.1}]`
	rs, err := Parse(strings.NewReader(out))
	if err != nil {
		panic(err)
	}
	for _, r := range rs {
		fmt.Printf("%s %.2f tok/s\n", r.Name(), r.TokensPerSec)
	}
	// Output:
	// pp512 210.50 tok/s
	// tg128 30.25 tok/s
}

func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("testdata/llama-bench.json"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`[{"n_prompt": 8, "avg_ts": 1, "flash_attn": true}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse(strings.NewReader(string(data)))
		if err != nil {
			if !errors.Is(err, ErrBadOutput) {
				t.Fatalf("error %v does not wrap ErrBadOutput", err)
			}
			return
		}
		for _, r := range rs {
			if !(r.TokensPerSec > 0) || r.NPrompt+r.NGen <= 0 {
				t.Fatalf("accepted %+v", r)
			}
		}
	})
}
