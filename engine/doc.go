// Package engine runs generations for many concurrent requests on one node:
// a scheduler with continuous batching (each step mixes decode tokens and
// chunked prefill up to a token budget), a block KV cache with a prefix cache,
// admission control, and cancellation. One goroutine owns the scheduler's
// state; callers talk to it with Submit and receive tokens on a channel.
//
// # A step
//
// The scheduler loop, on its own goroutine:
//
//  1. takes new requests (Submit) into the waiting queue and runs pending
//     Embed calls;
//  2. ends cancelled requests (their context is done) and frees their blocks;
//  3. admits waiting requests, oldest first, up to Config.MaxRunning: a
//     request first attaches the prefix-cache blocks that match its prompt
//     (kvcache.Cache.AttachPrefix), then is admitted if the pool still has
//     blocks for the rest of its prompt plus Config.AdmitHeadroom; otherwise
//     it and everything behind it wait;
//  4. plans the step with planStep, a pure function: one token for every
//     decoding sequence, then prefill chunks (≤ Config.PrefillChunk) of the
//     others, oldest first, up to Config.MaxBatchTokens rows;
//  5. gets the blocks the plan needs; when the pool is exhausted it preempts
//     the most recently admitted sequence (frees its blocks and puts it back
//     at the head of the queue, to recompute later, mostly from the prefix
//     cache) and plans again;
//  6. runs ONE model.Batch with every planned row, commits the sequences'
//     full blocks to the prefix cache, and samples a token for each sequence
//     whose last known token was in the batch;
//  7. publishes Stats, then sends the step's final (Done) events.
//
// # Guarantees
//
//   - A request's tokens do not depend on what else runs: the kernels are
//     batch-invariant, attention over blocks is bit-identical to a contiguous
//     cache, prefix-cache hits and recomputation after preemption give the
//     same keys and values as the first computation, and each request has
//     its own sampler seeded from Request.Sampling.Seed.
//   - The scheduler never blocks on a reader: each request's channel is
//     buffered (min(MaxTokens, Config.EventBuffer) + 1, one slot kept for the
//     final event); a reader that lets it fill is cancelled with
//     ErrSlowConsumer.
//   - Every channel ends with exactly one Done event (usage filled in), then
//     is closed. Token events come before it, one per generated token,
//     including a stop or end-of-generation token.
//   - Full blocks of a finished generation (prompt and generated tokens)
//     stay in the prefix cache until evicted (least recently released
//     first), so a session's next turn reuses them.
//
// Routed experts run in process unless WithExperts gives the engine another
// model.ExpertRunner: on a cluster node, the dispatcher of actors/dispatch
// (cluster.Node.StartExperts), which sends each expert's rows to the node
// hosting it. Tokens are the same either way.
//
// It imports model and its subpackages and kernels; never the network, raft
// or memberlist.
package engine
