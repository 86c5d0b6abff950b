package gguf

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/conclave-ai/conclave/kernels"
)

// resident counts the pages under b mapped in this process
// (/proc/self/pagemap, bit 63: present).
func resident(t *testing.T, b []byte) (present, pages int) {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b))) &^ (page - 1)
	end := uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(len(b))
	pages = int((end - start + page - 1) / page)
	buf := make([]byte, 8*pages)
	if _, err := f.ReadAt(buf, int64(start/page*8)); err != nil {
		t.Skip(err)
	}
	for i := range pages {
		if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
			present++
		}
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
