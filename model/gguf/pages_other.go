//go:build !linux

package gguf

import "errors"

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

// ResidentPages is not available outside Linux.
func ResidentPages(b []byte) (present, pages int, err error) {
	return 0, 0, errors.ErrUnsupported
}
