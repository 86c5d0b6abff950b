// Package engine runs generations for many concurrent requests on one node:
// a scheduler with continuous batching (each step mixes decode tokens and
// chunked prefill up to a token budget), a block KV cache with a prefix cache,
// admission control, and cancellation. One goroutine owns the scheduler's
// state; callers talk to it with Submit and receive tokens on a channel.
//
// It imports model and its subpackages and kernels; never the network, raft
// or memberlist. The actor that hosts it on a node comes with the
// experts-as-actors work.
package engine
