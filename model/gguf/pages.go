package gguf

import "os"

// touchSink keeps touch's reads from being optimised away.
var touchSink byte

// touch reads one byte of every page of b.
func touch(b []byte) {
	var s byte
	for i := 0; i < len(b); i += os.Getpagesize() {
		s += b[i]
	}
	touchSink = s
}
