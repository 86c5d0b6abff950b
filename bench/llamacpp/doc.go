// Package llamacpp reads the results of llama.cpp's llama-bench (its
// `-o json` output), the reference that Conclave's CPU speed is compared with.
// build.sh in this directory builds llama-bench from the llama.cpp source that
// the node-llama-cpp npm package ships (see bench/parity).
//
// It imports only the standard library.
package llamacpp
