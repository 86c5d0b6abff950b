package model_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

func TestExpertFileRoundTrip(t *testing.T) {
	for _, typ := range []kernels.DType{kernels.F32, kernels.Q8_0} {
		t.Run(typ.String(), func(t *testing.T) {
			_, w := testmodel.Load(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.Type = typ }))
			b, err := model.EncodeExpertFile(w, 1, 2, "test")
			if err != nil {
				t.Fatal(err)
			}
			f, err := gguf.Parse("expert.gguf", b)
			if err != nil {
				t.Fatal(err)
			}
			x, err := model.LoadExpertFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if x.Layer != 1 || x.Index != 2 || x.Source != "test" || x.Fits(w) != nil {
				t.Fatalf("file %+v, fits %v", x, x.Fits(w))
			}
			want := &w.Blocks[1].Experts[2]
			for i, pair := range [][2]kernels.Matrix{{x.Expert.Gate, want.Gate}, {x.Expert.Up, want.Up}, {x.Expert.Down, want.Down}} {
				got, exp := pair[0], pair[1]
				if got.Type != exp.Type || got.Rows != exp.Rows || got.Cols != exp.Cols || !bytes.Equal(got.Data, exp.Data) {
					t.Fatalf("matrix %d differs: %v %dx%d vs %v %dx%d", i, got.Type, got.Rows, got.Cols, exp.Type, exp.Rows, exp.Cols)
				}
			}
			// Computing with the file's expert gives the model's expert's bits.
			in := make([]float32, w.Dim)
			for i := range in {
				in[i] = float32(i%7) - 3
			}
			a, c := make([]float32, w.Dim), make([]float32, w.Dim)
			var s model.ExpertScratch
			want.Forward(nil, &s, in, 1, a)
			x.Expert.Forward(nil, &s, in, 1, c)
			for i := range a {
				if a[i] != c[i] {
					t.Fatalf("output %d: %v vs %v", i, c[i], a[i])
				}
			}
		})
	}
}

func TestExpertFileErrors(t *testing.T) {
	_, w := testmodel.Load(t, testmodel.Config(t, "tiny", nil))
	if _, err := model.EncodeExpertFile(w, w.Layers, 0, ""); !errors.Is(err, model.ErrInvalidModel) {
		t.Errorf("encode outside the model: %v", err)
	}
	b, err := model.EncodeExpertFile(w, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := gguf.Parse("x.gguf", b)
	x, err := model.LoadExpertFile(f)
	if err != nil {
		t.Fatal(err)
	}
	_, other := testmodel.Load(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.FFN *= 2 }))
	if err := x.Fits(other); !errors.Is(err, model.ErrInvalidModel) {
		t.Errorf("fits a model of another shape: %v", err)
	}
	// A whole model is not an expert file.
	mf, _ := testmodel.Load(t, testmodel.Config(t, "tiny", nil))
	if _, err := model.LoadExpertFile(mf); !errors.Is(err, model.ErrInvalidModel) {
		t.Errorf("model file as expert file: %v", err)
	}
}
