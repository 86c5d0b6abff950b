// Package model runs decoder-only transformer language models stored as GGUF:
// the Mixtral-style mixture-of-experts llama architecture first, dense llama
// too.
//
// It owns hyperparameters (Config), weight binding by GGUF tensor name
// (Weights), and the forward pass, split so that a caller can run attention
// and the gate for a batch, then each routed expert on the rows sent to it,
// then combine the results (Runner.Forward with an ExpertRunner). The local
// ExpertRunner calls Expert.Forward directly; the cluster puts actors there.
//
// model imports kernels and its own subpackages (gguf, kvcache, tokenizer,
// sample); never actors, raft, memberlist or the network.
package model
