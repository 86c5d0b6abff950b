package gguf

import (
	"path/filepath"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
)

// resident counts the pages under b mapped in this process and all its
// pages (skipping the test where that cannot be read).
func resident(t *testing.T, b []byte) (present, pages int) {
	t.Helper()
	present, pages, err := ResidentPages(b)
	if err != nil {
		t.Skip(err)
	}
	return present, pages
}

// Populate makes a tensor resident; Release drops its neighbours' whole
// pages, whatever faulting the tensor mapped of them, and keeps its own.
func TestPopulateRelease(t *testing.T) {
	const n = 1 << 20 // F32 elements: 4 MiB per tensor
	w := NewWriter(3)
	for _, name := range []string{"a", "b", "c"} {
		if err := w.AddTensor(name, kernels.F32, []uint64{n}, make([]byte, 4*n)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "pages.gguf")
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := map[string][]byte{}
	for _, name := range []string{"a", "b", "c"} {
		if _, data[name], err = f.Tensor(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Populate(data["b"]); err != nil {
		t.Fatal(err)
	}
	pa, _ := resident(t, data["a"])
	pc, _ := resident(t, data["c"])
	if p, all := resident(t, data["b"]); p != all {
		t.Fatalf("after Populate: %d of b's %d pages resident", p, all)
	}
	t.Logf("populating b also mapped %d pages of a and %d of c", pa, pc)
	for _, name := range []string{"a", "c"} {
		if err := f.Release(data[name]); err != nil {
			t.Fatal(err)
		}
		if p, all := resident(t, data[name]); p > 2 { // at most the partial pages at its ends
			t.Errorf("after Release: %d of %s's %d pages resident", p, name, all)
		}
	}
	if p, all := resident(t, data["b"]); p != all {
		t.Errorf("releasing its neighbours left %d of b's %d pages resident", p, all)
	}
	// Data stays readable after Release.
	if data["a"][12345] != 0 {
		t.Error("released data changed")
	}
	// A slice that is not from the mapping is left alone.
	if err := f.Release(make([]byte, 1<<16)); err != nil {
		t.Error(err)
	}
}
