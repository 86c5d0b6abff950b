package gguf

import (
	"cmp"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"unsafe"
)

// File is an open GGUF file. Its metadata is read and validated by Open and
// copied out of the mapping; tensor data stays in the read-only mapping until
// Close. A File is safe for concurrent use by readers; Close must not race
// with them.
type File struct {
	// Path is the name the file was opened by; every error names it.
	Path string
	// Version is the GGUF version, 2 or 3.
	Version uint32
	// KVs are the metadata entries in file order. Treat them as read-only:
	// getters return slices stored here.
	KVs []KV
	// Tensors is the tensor directory in file order.
	Tensors []TensorInfo
	// Alignment of the data section and of every tensor, in bytes.
	Alignment uint64
	// DataOffset is the file offset of the data section; tensor offsets are
	// relative to it.
	DataOffset uint64

	data    []byte         // whole file; nil once closed
	unmap   func() error   // releases data; nil for Parse
	mapped  bool           // data is an mmap of the file (Populate and Release act on it)
	keys    map[string]int // key -> index in KVs
	tensors map[string]int // name -> index in Tensors
}

// Open maps the GGUF file at path read-only and validates its header,
// metadata and tensor directory. The caller must Close the File.
func Open(path string) (*File, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: open: %w", err)
	}
	f, err := parse(path, data)
	if err != nil {
		unmap()
		return nil, err
	}
	f.unmap = unmap
	f.mapped = fileMapped && len(data) > 0
	return f, nil
}

// Parse decodes a GGUF file held in memory, validating it as Open does.
// name is used in errors. The File keeps data (it is not copied): tensor
// slices point into it. It suits tests and small files; Close is optional.
func Parse(name string, data []byte) (*File, error) {
	return parse(name, data)
}

// Close releases the mapping. Tensor data slices obtained from the File
// must not be used afterwards; metadata remains readable. Close is
// idempotent.
func (f *File) Close() error {
	f.data = nil
	if f.unmap == nil {
		return nil
	}
	unmap := f.unmap
	f.unmap = nil
	if err := unmap(); err != nil {
		return fmt.Errorf("gguf: %s: unmap: %w", f.Path, err)
	}
	return nil
}

// Populate makes the pages under b, a slice of this File's tensor data,
// resident in this process (reading them from disk if they are not in the
// page cache), so that using them later takes no page faults. It blocks
// while pages are read. Where the file is not mapped it does nothing.
func (f *File) Populate(b []byte) error {
	if r, ok := f.pages(b, false); ok {
		if err := populate(r); err != nil {
			return fmt.Errorf("gguf: %s: populate: %w", f.Path, err)
		}
	}
	return nil
}

// Release drops the whole pages under b, a slice of this File's tensor
// data, from this process's resident memory (the page cache keeps them);
// the slice stays valid, and reading it again faults the pages back in.
// Partial pages at b's ends are kept, since neighbouring data may be in
// use. Where the file is not mapped it does nothing.
//
// Why it exists: a page fault maps the whole folio of the page cache around
// the faulting page (up to 2 MiB with large folios), so using one tensor
// also makes parts of its neighbours resident; Release undoes that for
// data this process does not use.
func (f *File) Release(b []byte) error {
	if r, ok := f.pages(b, true); ok {
		if err := release(r); err != nil {
			return fmt.Errorf("gguf: %s: release: %w", f.Path, err)
		}
	}
	return nil
}

// SmallPages asks the kernel to map this File with base pages only
// (MADV_NOHUGEPAGE on the whole mapping; Linux only), so that Release can
// drop part of a large page-cache folio: a folio mapped as one 2 MiB huge
// page can only be unmapped whole, and mapping it again maps all of it. It
// trades TLB reach for page-granular residency, so only callers that Release
// parts of the file should ask. Mappings already made with huge pages stay
// until released. Where the file is not mapped it does nothing.
func (f *File) SmallPages() error {
	if !f.mapped || f.data == nil {
		return nil
	}
	if err := noHugePages(f.data); err != nil {
		return fmt.Errorf("gguf: %s: no huge pages: %w", f.Path, err)
	}
	return nil
}

// pages returns the page-aligned part of the mapping under b: rounded
// outward, or inward when inner. ok is false when f is not mapped, b is not
// within the mapping, or no whole page remains.
func (f *File) pages(b []byte, inner bool) (_ []byte, ok bool) {
	if !f.mapped || f.data == nil || len(b) == 0 {
		return nil, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(f.data)))
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b))) - base
	end := start + uintptr(len(b))
	if start >= uintptr(len(f.data)) || end > uintptr(len(f.data)) {
		return nil, false
	}
	page := uintptr(os.Getpagesize())
	if inner {
		start, end = (start+page-1)&^(page-1), end&^(page-1)
	} else {
		start, end = start&^(page-1), min((end+page-1)&^(page-1), uintptr(len(f.data)))
	}
	if start >= end {
		return nil, false
	}
	return f.data[start:end:end], true
}

// Tensor returns the directory entry of the named tensor and its data, a
// slice of exactly Size() bytes into the read-only mapping (writing to it
// faults). The slice is valid until Close.
func (f *File) Tensor(name string) (TensorInfo, []byte, error) {
	i, ok := f.tensors[name]
	if !ok {
		return TensorInfo{}, nil, fmt.Errorf("gguf: %s: tensor %q: %w", f.Path, name, ErrMissingTensor)
	}
	ti := f.Tensors[i]
	if f.data == nil {
		return ti, nil, fmt.Errorf("gguf: %s: tensor %q: %w", f.Path, name, ErrClosed)
	}
	start := f.DataOffset + ti.Offset
	end := start + ti.Size()
	return ti, f.data[start:end:end], nil
}

// HasTensor reports whether the file has a tensor of that name.
func (f *File) HasTensor(name string) bool {
	_, ok := f.tensors[name]
	return ok
}

func parse(path string, b []byte) (*File, error) {
	d := &decoder{path: path, b: b, section: "header", index: -1}
	magic, err := d.take(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != "GGUF" {
		return nil, d.fail("bad magic %q, want \"GGUF\"; not a GGUF file", magic)
	}
	version, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, fmt.Errorf("gguf: %s: %w: version 1 (32-bit counts, pre-2023 format); convert the model again with a current tool",
			path, ErrUnsupportedVersion)
	case bits.ReverseBytes32(version) >= 1 && bits.ReverseBytes32(version) <= 3:
		return nil, fmt.Errorf("gguf: %s: %w: big-endian file (version %d byte-swapped); only little-endian files are read",
			path, ErrUnsupportedVersion, bits.ReverseBytes32(version))
	default:
		return nil, fmt.Errorf("gguf: %s: %w: version %d, want 2 or 3", path, ErrUnsupportedVersion, version)
	}
	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKVs, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// maxPresize bounds the entries allocated ahead of parsing them.
	const maxPresize = 4096
	// A KV takes at least 13 bytes (key length, type, one byte of value), a
	// tensor entry at least 24 (name length, dim count, type, offset).
	const minKV, minTensor = 8 + 4 + 1, 8 + 4 + 4 + 8
	rem := d.remaining()
	if nKVs > rem/minKV || nTensors > rem/minTensor || nKVs*minKV+nTensors*minTensor > rem {
		return nil, d.fail("%d metadata entries and %d tensors cannot fit in the %d bytes left", nKVs, nTensors, rem)
	}

	// Presize by the counts only up to a bound: they fit the file's bytes,
	// but a KV or tensor entry takes far more memory parsed than its
	// minimum on disk, so a lying count would ask for several times the
	// file (tensor data included) before the first entry is read.
	hint := func(n uint64) int { return int(min(n, maxPresize)) }
	f := &File{
		Path:    path,
		Version: version,
		KVs:     make([]KV, 0, hint(nKVs)),
		Tensors: make([]TensorInfo, 0, hint(nTensors)),
		keys:    make(map[string]int, hint(nKVs)),
		tensors: make(map[string]int, hint(nTensors)),
	}
	d.section = "key"
	for i := range int(nKVs) {
		d.index, d.name = i, ""
		key, err := d.str("key")
		if err != nil {
			return nil, err
		}
		d.name = key
		if _, dup := f.keys[key]; dup {
			return nil, fmt.Errorf("gguf: %s: %w: %w: key %q occurs twice", path, ErrCorrupt, ErrDuplicate, key)
		}
		t, err := d.u32("value type")
		if err != nil {
			return nil, err
		}
		v, err := d.value(ValueType(t), 0)
		if err != nil {
			return nil, err
		}
		f.keys[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Value: v})
	}

	d.section, d.index, d.name = "header", -1, ""
	f.Alignment = DefaultAlignment
	if v, ok := f.Value(KeyAlignment); ok {
		a, err := toUint(v)
		if err != nil || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("gguf: %s: %w: key %q: want a non-zero power of two, found %s %v",
				path, ErrCorrupt, KeyAlignment, describe(v), v)
		}
		f.Alignment = a
	}

	d.section = "tensor"
	for i := range int(nTensors) {
		d.index, d.name = i, ""
		ti, err := d.tensorInfo()
		if err != nil {
			return nil, err
		}
		if _, dup := f.tensors[ti.Name]; dup {
			return nil, fmt.Errorf("gguf: %s: %w: %w: tensor %q occurs twice", path, ErrCorrupt, ErrDuplicate, ti.Name)
		}
		f.tensors[ti.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}

	// The data section starts at the next multiple of the alignment.
	end := uint64(len(b))
	f.DataOffset = uint64(d.off)
	if r := f.DataOffset % f.Alignment; r != 0 {
		pad := f.Alignment - r
		if pad > end-f.DataOffset {
			if len(f.Tensors) > 0 {
				d.section, d.index, d.name = "header", -1, ""
				return nil, d.fail("truncated: data section at alignment %d starts past the end of the file (%d bytes)", f.Alignment, end)
			}
			pad = end - f.DataOffset // no data: a missing final pad is harmless
		}
		f.DataOffset += pad
	}
	avail := end - f.DataOffset
	for i, ti := range f.Tensors {
		d.index, d.name = i, ti.Name
		if ti.Offset%f.Alignment != 0 {
			return nil, d.fail("data offset %d is not a multiple of the alignment %d", ti.Offset, f.Alignment)
		}
		size := ti.Size()
		if ti.Offset > avail || size > avail-ti.Offset {
			return nil, d.fail("%d bytes of data at offset %d in the data section (file offset %d) run past the end of the file (%d bytes)",
				size, ti.Offset, f.DataOffset, end)
		}
	}
	// No two tensors share bytes (as ggml requires: one tensor's bytes
	// would be another's, and a write to one, or its loss, the other's).
	byOffset := make([]int, len(f.Tensors))
	for i := range byOffset {
		byOffset[i] = i
	}
	slices.SortFunc(byOffset, func(a, b int) int { return cmp.Compare(f.Tensors[a].Offset, f.Tensors[b].Offset) })
	for k := 1; k < len(byOffset); k++ {
		prev, ti := f.Tensors[byOffset[k-1]], f.Tensors[byOffset[k]]
		if ti.Offset < prev.Offset+prev.Size() && ti.Size() > 0 && prev.Size() > 0 {
			d.index, d.name = byOffset[k], ti.Name
			return nil, d.fail("data at offset %d overlaps tensor %q (offset %d, %d bytes)", ti.Offset, prev.Name, prev.Offset, prev.Size())
		}
	}
	f.data = b
	return f, nil
}
