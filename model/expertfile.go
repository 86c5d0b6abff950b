package model

import (
	"bytes"
	"fmt"

	"github.com/conclave-ai/conclave/model/gguf"
)

// An expert file is a small GGUF holding one expert's three matrices, the
// unit of a hot expert update: general.architecture "conclave.expert", the
// expert's coordinates and shape under "conclave.expert.*", and the tensors
// ffn_gate.weight and ffn_up.weight ([Dim, FFN]) and ffn_down.weight ([FFN,
// Dim]) in any element type the kernels support.
const (
	ExpertFileArch = "conclave.expert"

	keyExpertLayer  = "conclave.expert.layer"
	keyExpertIndex  = "conclave.expert.index"
	keyExpertDim    = "conclave.expert.embedding_length"
	keyExpertFFN    = "conclave.expert.feed_forward_length"
	keyExpertSource = "conclave.expert.source"
)

// ExpertFile is a bound expert file.
type ExpertFile struct {
	Layer, Index int
	Dim, FFN     int
	Source       string // free text: where the weights came from
	Expert       Expert // matrices pointing into the file
}

// EncodeExpertFile returns the expert file of expert (layer, index) of w;
// source is recorded as conclave.expert.source.
func EncodeExpertFile(w *Weights, layer, index int, source string) ([]byte, error) {
	if layer < 0 || layer >= len(w.Blocks) || index < 0 || index >= len(w.Blocks[layer].Experts) {
		return nil, fmt.Errorf("%w: no expert %d of layer %d in a model of %d layers × %d experts",
			ErrInvalidModel, index, layer, len(w.Blocks), w.Experts)
	}
	e := &w.Blocks[layer].Experts[index]
	gw := gguf.NewWriter(3)
	for _, kv := range []struct {
		k string
		v any
	}{
		{"general.architecture", ExpertFileArch},
		{keyExpertLayer, uint32(layer)},
		{keyExpertIndex, uint32(index)},
		{keyExpertDim, uint32(w.Dim)},
		{keyExpertFFN, uint32(w.FFN)},
		{keyExpertSource, source},
	} {
		if err := gw.AddKV(kv.k, kv.v); err != nil {
			return nil, err
		}
	}
	for _, t := range []struct {
		name string
		m    *Expert
	}{{"ffn_gate.weight", e}, {"ffn_up.weight", e}, {"ffn_down.weight", e}} {
		m := t.m.Gate
		switch t.name {
		case "ffn_up.weight":
			m = t.m.Up
		case "ffn_down.weight":
			m = t.m.Down
		}
		if err := gw.AddTensor(t.name, m.Type, []uint64{uint64(m.Cols), uint64(m.Rows)}, m.Data); err != nil {
			return nil, err
		}
	}
	var b bytes.Buffer
	if _, err := gw.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// LoadExpertFile binds an expert file. The matrices point into f, which
// must stay open while they are used.
func LoadExpertFile(f *gguf.File) (*ExpertFile, error) {
	arch, err := f.String("general.architecture")
	if err != nil {
		return nil, err
	}
	if arch != ExpertFileArch {
		return nil, fmt.Errorf("%w: %s: architecture %q is not an expert file (%q)", ErrInvalidModel, f.Path, arch, ExpertFileArch)
	}
	var vals [4]uint64
	for i, k := range []string{keyExpertLayer, keyExpertIndex, keyExpertDim, keyExpertFFN} {
		if vals[i], err = f.Uint(k); err != nil {
			return nil, err
		}
	}
	for i, v := range vals {
		if v > maxHyper { // int(v) would wrap negative past 2^63
			return nil, fmt.Errorf("%w: %s: %s %d out of range", ErrInvalidModel, f.Path,
				[]string{keyExpertLayer, keyExpertIndex, keyExpertDim, keyExpertFFN}[i], v)
		}
	}
	x := &ExpertFile{Layer: int(vals[0]), Index: int(vals[1]), Dim: int(vals[2]), FFN: int(vals[3])}
	if x.Dim <= 0 || x.FFN <= 0 {
		return nil, fmt.Errorf("%w: %s: expert shape %d × %d", ErrInvalidModel, f.Path, x.Dim, x.FFN)
	}
	x.Source, _ = f.StringOr(keyExpertSource, "")
	b := binder{f: f}
	x.Expert = Expert{
		Gate: b.matrix("ffn_gate.weight", x.Dim, x.FFN),
		Up:   b.matrix("ffn_up.weight", x.Dim, x.FFN),
		Down: b.matrix("ffn_down.weight", x.FFN, x.Dim),
	}
	if b.err != nil {
		return nil, b.err
	}
	return x, nil
}

// Fits reports, as an error naming the mismatch, whether x can replace its
// expert in w: the expert exists and the shapes agree.
func (x *ExpertFile) Fits(w *Weights) error {
	switch {
	case !w.MoE():
		return fmt.Errorf("%w: the model has no experts", ErrInvalidModel)
	case x.Layer < 0 || x.Index < 0 || x.Layer >= w.Layers || x.Index >= w.Experts:
		return fmt.Errorf("%w: expert %d of layer %d is not in a model of %d layers × %d experts",
			ErrInvalidModel, x.Index, x.Layer, w.Layers, w.Experts)
	case x.Dim != w.Dim || x.FFN != w.FFN:
		return fmt.Errorf("%w: expert shape dim %d × ffn %d, the model's is %d × %d",
			ErrInvalidModel, x.Dim, x.FFN, w.Dim, w.FFN)
	}
	return nil
}
