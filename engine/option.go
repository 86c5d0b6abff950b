package engine

import "github.com/conclave-ai/conclave/model"

// Option adjusts an Engine beyond its Config (things that are not sizes).
type Option func(*options)

type options struct {
	experts model.ExpertRunner
}

// WithExperts makes the engine compute routed experts through r (the
// cluster's dispatcher, which sends each expert's rows to the node hosting
// it) instead of in process. r is called from the scheduler goroutine only.
// nil keeps the default, model.LocalExperts over the engine's weights.
func WithExperts(r model.ExpertRunner) Option {
	return func(o *options) { o.experts = r }
}
