//go:build !linux && amd64 && !purego

package kernels

// amxPermitted: the tile state is only requested on Linux.
func amxPermitted() bool { return false }
