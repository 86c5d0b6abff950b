//go:build !linux

package gguf

// populate prefaults b by reading a byte of every page.
func populate(b []byte) error {
	touch(b)
	return nil
}

// release does nothing outside Linux: pages stay until the kernel reclaims
// them.
func release(b []byte) error { return nil }

// noHugePages does nothing outside Linux.
func noHugePages(b []byte) error { return nil }
