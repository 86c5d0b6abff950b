// Package synth writes deterministic random-weight models as GGUF files: the
// embedded demo model, the benchmark model, and the small models tests and
// parity checks run on. A file holds a working SentencePiece-style tokenizer
// and a Mixtral chat template, so every path from text to text can run on it.
//
// It imports kernels (quantizers) and model/gguf (the writer) only.
package synth
