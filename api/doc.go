// Package api is Conclave's OpenAI-compatible HTTP API: the gateway in
// front of one node's engine.
//
// It owns the wire protocol and everything a request meets before the
// engine: routing (POST /v1/chat/completions, /v1/completions,
// /v1/embeddings; GET /v1/models, /health, /ready, /metrics), bearer API
// keys, per-key token-bucket rate limits and concurrency caps, body size
// and content-type checks, decoding and validating every field into an
// OpenAI-style 4xx when wrong, rendering chat templates and tokenizing
// (message content can never inject special tokens; see prompt.go),
// context-length checks, streaming over server-sent events (one flush per
// released piece of text, never half a UTF-8 character, stop strings
// detected on the decoded text and held back until they are ruled out),
// logprobs in both OpenAI formats, Prometheus metrics named as vLLM names
// them (prefix "conclave:"), structured request logs with request ids,
// and draining for shutdown. A client that disconnects cancels its
// generation: the request's context is the one given to the engine.
//
// The engine is reached through the small Engine interface (Submit, Embed,
// Stats), which *engine.Engine implements. Session affinity goes through
// the SessionRouter interface (session.go; cluster.SessionRouter backs it
// with the Raft map): a generation with a session id runs on the session's
// home node, and another node forwards it there unbuffered, marked with
// the X-Conclave-Forwarded header so it is never forwarded twice; a home
// that cannot be reached is replaced (Rehome) and the client sees no
// error. Streams are relayed event by event (relay.go): the home adds the
// generated token ids to each forwarded chunk, and when it dies mid-stream
// the forwarding node re-homes the session and continues the generation
// on the new home from those tokens (the internal conclave_resume field),
// so the client's stream goes on, identical to an undisturbed one. Nodes
// mount the API on their HTTP mux with Register; cmd/conclave wires flags
// to Config.
//
// It imports engine (types and errors), model/tokenizer, model/sample, the
// Prometheus client and the standard library; never cluster, router, raft
// or memberlist.
package api
