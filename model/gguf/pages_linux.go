package gguf

import (
	"encoding/binary"
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// populate prefaults b (page aligned) with MADV_POPULATE_READ (Linux 5.14),
// or by reading a byte of every page on older kernels.
func populate(b []byte) error {
	err := unix.Madvise(b, unix.MADV_POPULATE_READ)
	if errors.Is(err, unix.EINVAL) {
		touch(b)
		return nil
	}
	return err
}

// release drops b (page aligned) from the page tables: MADV_DONTNEED on a
// read-only shared file mapping only unmaps; the data is read back from the
// page cache or the file on the next access.
func release(b []byte) error { return unix.Madvise(b, unix.MADV_DONTNEED) }

// noHugePages sets MADV_NOHUGEPAGE on b (page aligned).
func noHugePages(b []byte) error { return unix.Madvise(b, unix.MADV_NOHUGEPAGE) }

// ResidentPages counts the pages under b (a tensor's bytes, say) that this
// process has mapped, from /proc/self/pagemap (bit 63: present), and all
// the pages b spans. It measures what a node keeps resident of its model.
func ResidentPages(b []byte) (present, pages int, err error) {
	if len(b) == 0 {
		return 0, 0, nil
	}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b))) &^ (page - 1)
	end := uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(len(b))
	pages = int((end - start + page - 1) / page)
	buf := make([]byte, 8*pages)
	if _, err := f.ReadAt(buf, int64(start/page*8)); err != nil {
		return 0, pages, err
	}
	for i := range pages {
		if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
			present++
		}
	}
	return present, pages, nil
}
