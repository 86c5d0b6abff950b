// Package testmodel writes synthesized GGUF models for tests and loads them,
// so that every package's tests get a model the same way. It is for tests
// only; it imports model, model/gguf and model/synth.
package testmodel

import (
	"path/filepath"
	"testing"

	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

// Config returns a synth preset ("tiny", "demo", "bench") changed by edit
// (nil: unchanged), failing the test on an unknown name.
func Config(t testing.TB, preset string, edit func(*synth.Config)) synth.Config {
	t.Helper()
	c, err := synth.Preset(preset)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&c)
	}
	return c
}

// Write synthesizes c into a file in the test's temporary directory and
// returns its path.
func Write(t testing.TB, c synth.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := synth.Write(c, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Open maps path and binds its weights; the file is closed when the test
// ends.
func Open(t testing.TB, path string) (*gguf.File, *model.Weights) {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	w, err := model.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return f, w
}

// Load synthesizes c and opens it.
func Load(t testing.TB, c synth.Config) (*gguf.File, *model.Weights) {
	t.Helper()
	return Open(t, Write(t, c))
}
