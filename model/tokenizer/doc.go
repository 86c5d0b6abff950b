// Package tokenizer turns text into token ids and back for the models
// Conclave serves, and renders their chat templates.
//
// It owns text ↔ token conversion, built from the tokenizer metadata of a
// GGUF file handed over as a plain Vocab struct: SentencePiece BPE ("llama",
// scores and byte fallback) and byte-level BPE ("gpt2", ranked merges and a
// per-model pre-tokenizer regex). Results must equal llama.cpp's
// (llama-vocab.cpp) token for token, so the algorithms, their tie-breaking
// and the special-token handling follow it; deliberate differences, all on
// invalid UTF-8 input only, are documented on Encode.
//
// It also owns chat-template rendering (ApplyChatTemplate) with
// github.com/ardanlabs/jinja, a dependency-free Jinja engine written for
// GGUF chat templates (it ships raise_exception, namespace, tojson, string
// methods and is tested upstream against Llama, Mistral, Qwen, DeepSeek and
// gpt-oss templates).
//
// Imports: the standard library, github.com/dlclark/regexp2 (pre-tokenizer
// regexes need lookahead and \p{..} classes, which regexp lacks) and
// github.com/ardanlabs/jinja. It must not import the GGUF reader or any
// other Conclave package; the reader depends on this package, not the
// reverse.
//
// Performance: Encode pools its scratch buffers, merges with a heap
// (O(n log n) per word), and matches special tokens with one substring scan
// per special token present in the text. The gpt2, llama3 and qwen2
// pre-tokenizers are hand-written scanners checked against their regexes
// (TestFastSplitMatchesRegex, FuzzFastSplit); only the multi-regex "default"
// chain runs through regexp2, a backtracking engine that allocates per match
// and is several times slower. regexp2 runs without a match timeout (its
// default), so no timer goroutine or clock reads are involved. SPM merges
// the whole fragment in one heap (it has no pre-tokenizer), as llama.cpp
// does. See BenchmarkEncode.
package tokenizer
