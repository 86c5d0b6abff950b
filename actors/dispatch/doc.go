// Package dispatch is the engine side of experts as actors: Dispatcher, the
// model.ExpertRunner that sends each layer's expert groups to the replicas
// the cluster map names and gathers their outputs.
//
// For each layer, RunExperts reads the current map once and, per expert
// group (all of the batch's rows routed to one expert), orders the ready
// replicas with the pure function Candidates: this node's own first, then
// the others by calls already assigned to their node in this layer, nodes
// that failed recently last. It sends one ComputeRequest per remote expert
// (rows as raw little-endian float32 bytes, carrying the map epoch) as a
// protoactor future with Config.Timeout, computes this node's own groups in
// process meanwhile (no message, no serialisation), then gathers the
// answers. A call that fails or misses its deadline is retried on the next
// replica; when none is left the expert is computed from this node's own
// weights (Fallback), so a layer always completes and the sequence goes on
// from the same layer. Because kernels are batch-invariant and rows
// independent, the tokens do not depend on which replica answered, on
// retries or on the fallback. The runner combines the outputs in ascending
// expert order.
//
// It imports actors/expert, model, router, kernels and protoactor-go; never
// cluster, engine, api or cmd. cluster.Node.StartExperts builds one for a
// node; engine.WithExperts hands it to the engine.
package dispatch
