// Package serve is a load generator for OpenAI-compatible inference servers:
// it measures Conclave's API, llama.cpp's llama-server and vLLM the same way,
// over the wire, from the client's side.
//
// Run sends streaming requests (stream: true, stream_options.include_usage)
// to /v1/chat/completions or /v1/completions and times each one from the send
// to the first content chunk (TTFT), between content chunks (ITL), and to the
// end of the stream (e2e); TPOT is (e2e − TTFT)/(output tokens − 1). One run
// is a sweep of levels, each in one of three modes:
//
//   - concurrency: a closed loop of C workers, each sending its next request
//     when the previous one ends;
//   - rate: an open loop with Poisson arrivals at R requests/s, whatever is
//     in flight;
//   - sessions: S conversations of T turns each, every turn appending the
//     previous answer and a new user message to the history and naming the
//     session (session_id in the body, X-Session-ID header) so that the
//     server can reuse the cached prefix; TTFT is reported per turn index.
//
// Prompts are synthetic: words drawn from a fixed list of common English
// words, seeded per request, so a run is reproducible and two runs with the
// same seed send the same text. A word is about one token in the usual BPE
// vocabularies; the report uses the server's usage.prompt_tokens when it is
// sent and the word count otherwise. Levels draw different prompts, so one
// level does not warm the prefix cache for the next; but a rerun with the
// same seed sends the same text again, which a server that keeps its prefix
// cache between runs answers from the cache — change Seed to measure cold
// prompts.
//
// The pure parts — length distributions, percentiles, the SSE reader, the
// per-level summary, the comparison of two reports and the Markdown tables —
// are plain functions; Run and the HTTP client only move data. Charts are
// drawn with gonum.org/v1/plot.
//
// serve imports only the standard library and gonum.org/v1/plot; only cmd/
// imports serve.
package serve
