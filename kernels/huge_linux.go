package kernels

import "golang.org/x/sys/unix"

// madviseHuge asks Linux for transparent huge pages under b (whole,
// aligned huge pages). Failure (THP disabled, an old kernel) only costs
// speed, so it is ignored.
func madviseHuge(b []byte) { _ = unix.Madvise(b, unix.MADV_HUGEPAGE) }
