package model

import (
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
