//go:build !linux

package kernels

// madviseHuge is a no-op where transparent huge pages are not offered.
func madviseHuge([]byte) {}
