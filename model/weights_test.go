package model

import (
	"fmt"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

// DenseBytes and ExpertBytes split the file's tensor data between them.
func TestDenseAndExpertBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*synth.Config)
	}{
		{"moe", nil},
		{"moe-q8_0-tied", func(c *synth.Config) { c.Type, c.TiedOutput = kernels.Q8_0, true }},
		{"moe-legacy", func(c *synth.Config) { c.LegacyExperts = true }},
		{"dense", func(c *synth.Config) { c.Experts, c.TopK = 0, 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, path := testModel(t, tinyConfig(t, tc.edit))
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var total int64
			for _, ti := range f.Tensors {
				total += int64(ti.Size())
			}
			dense, experts := w.DenseBytes(), w.ExpertBytes()
			if dense+experts != total {
				t.Errorf("dense %d + experts %d = %d, want the file's %d tensor bytes", dense, experts, dense+experts, total)
			}
			if want := int64(w.Layers*w.Experts) * w.FeedForward(0, 0).Bytes(); w.Experts > 0 && experts != want {
				t.Errorf("experts %d bytes, want %d", experts, want)
			}
			if w.Experts == 0 && experts != 0 {
				t.Errorf("dense model has %d expert bytes", experts)
			}
		})
	}
}

// TestExpertBatchMatchesForward runs several experts' calls as one
// ExpertBatch on a pool (their SwiGLU in pieces over the threads) and checks
// each output, bit for bit, against the expert run alone on the caller, one
// row at a time.
func TestExpertBatchMatchesForward(t *testing.T) {
	for _, tc := range []struct {
		typ kernels.DType
		ffn int
	}{{kernels.F32, 1060}, {kernels.Q8_0, 1056}} { // 1060: pieces end off the SIMD width
		typ := tc.typ
		w, _ := testModel(t, tinyConfig(t, func(c *synth.Config) {
			c.Dim, c.Heads, c.KVHeads, c.FFN, c.Type = 64, 4, 2, tc.ffn, typ
		}))
		pool := kernels.NewPool(2)
		defer pool.Close()
		rows := []int{1, 5, 9} // ffn·5 and ffn·9 elements: several SwiGLU pieces
		calls := make([]ExpertCall, len(rows))
		scratch := make([]ExpertScratch, len(rows))
		for i, n := range rows {
			in := make([]float32, n*w.Dim)
			for j := range in {
				in[j] = float32((j*7+i*3)%11) - 5
			}
			calls[i] = ExpertCall{FFN: &w.Blocks[0].Experts[i], S: &scratch[i], In: in, Rows: n, Out: make([]float32, n*w.Dim)}
		}
		var b ExpertBatch
		b.Forward(pool, calls)
		// A copied batch must run its own pieces, not the original's.
		copied := b
		for i := range calls {
			clear(calls[i].Out)
		}
		copied.Forward(pool, calls)
		for i, c := range calls {
			var s ExpertScratch
			for r := range c.Rows {
				want := make([]float32, w.Dim)
				c.FFN.Forward(nil, &s, c.In[r*w.Dim:(r+1)*w.Dim], 1, want)
				sameBits(t, fmt.Sprintf("%v call %d row %d", typ, i, r), c.Out[r*w.Dim:(r+1)*w.Dim], want)
			}
		}
	}
}
