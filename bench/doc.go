// Package bench measures the engine the way llama.cpp's llama-bench measures
// llama.cpp, so the two can be put side by side: prompt processing (ppN: N
// prompt tokens into a fresh cache, tokens/s) and generation (tgN: N tokens
// decoded one at a time from a fresh cache, tokens/s), plus what the numbers
// mean against the machine: weight bytes streamed per decoded token and the
// bandwidth that implies, prefill GFLOP/s, peak resident memory.
//
// The measurement loop drives an Engine (one sequence: reset, prefill,
// decode), so anything that can run a sequence — the in-process Runner today,
// a cluster later — is measured the same way. Compare joins a Report with
// llama-bench results (package bench/llamacpp) into a ratio table.
//
// bench imports model, model/kvcache, kernels, bench/membw and
// bench/llamacpp; only cmd/ imports bench.
package bench
