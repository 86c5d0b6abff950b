package engine

import "github.com/conclave-ai/conclave/model"

// Option adjusts an Engine beyond its Config (things that are not sizes).
type Option func(*options)

type options struct {
	experts model.ExpertRunner
	weights func() uint64
}

// WithExperts makes the engine compute routed experts through r (the
// cluster's dispatcher, which sends each expert's rows to the node hosting
// it) instead of in process. r is called from the scheduler goroutine only.
// nil keeps the default, model.LocalExperts over the engine's weights.
func WithExperts(r model.ExpertRunner) Option {
	return func(o *options) { o.experts = r }
}

// WithWeightsVersion gives the engine a cheap function that names the
// version of the weights it computes with (in a cluster: the live expert
// versions of the map and how often each changed, which hot updates
// change). Before each step the engine compares it with the last value
// and, when it changed, empties the prefix cache (see
// InvalidatePrefixCache). A value must not come back once the weights
// changed: an update undone between two looks would go unseen, and blocks
// computed in between would seed later requests. It is called from the
// scheduler goroutine only.
func WithWeightsVersion(f func() uint64) Option {
	return func(o *options) { o.weights = f }
}
