package llamacpp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// ErrBadOutput is wrapped by errors about llama-bench output that cannot be read.
var ErrBadOutput = errors.New("llamacpp: bad llama-bench output")

// Result is one llama-bench test: a prompt-processing run (NPrompt > 0,
// NGen = 0) or a generation run (NPrompt = 0, NGen > 0), averaged over its
// repetitions. Only the fields the comparison needs are kept.
type Result struct {
	BuildCommit  string  `json:"build_commit"`
	CPUInfo      string  `json:"cpu_info"`
	Backends     string  `json:"backends"`
	Model        string  `json:"model_filename"`
	ModelType    string  `json:"model_type"`     // e.g. "llama 8x0.6B Q8_0"
	ModelSize    int64   `json:"model_size"`     // bytes of tensor data
	ModelParams  int64   `json:"model_n_params"` // total parameters
	NBatch       int     `json:"n_batch"`
	NUBatch      int     `json:"n_ubatch"`
	Threads      int     `json:"n_threads"`
	TypeK        string  `json:"type_k"`
	TypeV        string  `json:"type_v"`
	FlashAttn    int     `json:"flash_attn"` // -1 auto, 0 off, 1 on
	NPrompt      int     `json:"n_prompt"`
	NGen         int     `json:"n_gen"`
	NDepth       int     `json:"n_depth"` // tokens in the cache before the test
	AvgNs        int64   `json:"avg_ns"`
	StddevNs     int64   `json:"stddev_ns"`
	TokensPerSec float64 `json:"avg_ts"`    // mean over repetitions of tokens/s
	StddevTs     float64 `json:"stddev_ts"` // its standard deviation
	Samples      int     `json:"-"`         // repetitions (len of samples_ns)
}

// Name is llama-bench's label for the test: pp512, tg128, pp512+tg128 (a
// combined run), with " @ dN" when the cache held N tokens first.
func (r Result) Name() string {
	var s string
	switch {
	case r.NPrompt > 0 && r.NGen > 0:
		s = "pp" + strconv.Itoa(r.NPrompt) + "+tg" + strconv.Itoa(r.NGen)
	case r.NPrompt > 0:
		s = "pp" + strconv.Itoa(r.NPrompt)
	default:
		s = "tg" + strconv.Itoa(r.NGen)
	}
	if r.NDepth > 0 {
		s += " @ d" + strconv.Itoa(r.NDepth)
	}
	return s
}

// Parse reads llama-bench's `-o json` output: a JSON array of test objects.
// Fields are checked for the types llama-bench writes; unknown fields are
// ignored, so newer llama-bench versions still parse.
func Parse(r io.Reader) ([]Result, error) {
	var raw []struct {
		Result
		Flash     json.RawMessage `json:"flash_attn"`
		SamplesNs []int64         `json:"samples_ns"`
	}
	dec := json.NewDecoder(r)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOutput, err)
	}
	out := make([]Result, 0, len(raw))
	for i, x := range raw {
		res := x.Result
		res.Samples = len(x.SamplesNs)
		// Older llama-bench versions write flash_attn as a boolean.
		switch string(x.Flash) {
		case "", "null", "false":
			res.FlashAttn = 0
		case "true":
			res.FlashAttn = 1
		default:
			n, err := strconv.Atoi(string(x.Flash))
			if err != nil {
				return nil, fmt.Errorf("%w: test %d: flash_attn %s", ErrBadOutput, i, x.Flash)
			}
			res.FlashAttn = n
		}
		if res.NPrompt < 0 || res.NGen < 0 || res.NPrompt+res.NGen == 0 {
			return nil, fmt.Errorf("%w: test %d has n_prompt %d and n_gen %d", ErrBadOutput, i, res.NPrompt, res.NGen)
		}
		if !(res.TokensPerSec > 0) {
			return nil, fmt.Errorf("%w: test %s has avg_ts %v", ErrBadOutput, res.Name(), res.TokensPerSec)
		}
		out = append(out, res)
	}
	return out, nil
}

// Find returns the result of the test with the given prompt and generation
// lengths at depth 0.
func Find(rs []Result, nPrompt, nGen int) (Result, bool) {
	for _, r := range rs {
		if r.NPrompt == nPrompt && r.NGen == nGen && r.NDepth == 0 {
			return r, true
		}
	}
	return Result{}, false
}
