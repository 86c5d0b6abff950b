// Package sample turns a vector of logits into one token id.
//
// It owns the sampling chain that runs once per generated token: penalties
// over the token history, then top-k, a temperature-scaled softmax, top-p,
// min-p, and finally a single seeded draw from the renormalised distribution
// (see [Sampler.Sample] for the exact order). A zero temperature selects the
// greedy path, which still applies penalties but skips every filter and the
// random draw.
//
// The package is a pure core: it performs no I/O, does no logging and holds no
// locks. A [Sampler] reserves every buffer it needs in [New], sized by the
// vocabulary, so [Sampler.Sample] does not allocate. A Sampler belongs to one
// sequence and one goroutine; concurrent sequences each own their own.
//
// Imports: the Go standard library only (errors, fmt, math, math/rand/v2,
// slices). No other Conclave package may be imported from here.
package sample
