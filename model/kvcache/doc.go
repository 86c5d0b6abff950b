// Package kvcache holds the attention keys and values of sequences in
// fixed-size blocks.
//
// A Pool allocates, once, a set of blocks of BlockSize positions × every
// layer × KVDim, stored as F16 (the default, as llama.cpp does) or F32;
// with HeadDim set, a block keeps each kv head's positions together, so
// attention over one head of a block reads one contiguous run. A
// sequence (Cache) holds a block table into a pool; blocks are refcounted,
// so sequences can share them. The pool's prefix cache maps the hash chain
// of a sequence's full blocks of token ids to blocks: a new sequence whose
// tokens start with cached blocks attaches them (AttachPrefix) instead of
// recomputing them, and a finished sequence's full blocks stay cached until
// evicted, least recently released first, when a block is needed. Only full
// blocks are shared, and a shared block is never written (a writer gets a
// private copy), so no sequence sees another's writes. An allocation that
// finds every block referenced fails with ErrFull.
//
// New makes a standalone cache (one sequence with a private pool holding its
// whole context, in one block unless Config.BlockSize says otherwise) for
// single-sequence callers such as the generate and logits commands.
//
// It knows nothing about attention math; the model package writes rows at a
// position and reads them back block by block. It imports only the kernels
// package (for F16 conversion and DType).
package kvcache
