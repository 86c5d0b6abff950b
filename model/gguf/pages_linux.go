package gguf

import (
	"errors"

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
