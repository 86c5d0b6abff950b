// Package gguf reads and writes GGUF container files (versions 2 and 3,
// little-endian), the on-disk format of quantized model weights.
//
// # What it owns
//
// The container only: the header, the typed key/value metadata, the tensor
// directory (name, shape, element type, offset) and the placement of tensor
// data inside the file. It gives no meaning to any key or tensor name;
// architectures, hyperparameters and tokenizers are read by the packages that
// own them, through the typed getters on [File].
//
// # Reading
//
// [Open] maps the file read-only and validates everything before returning:
// counts are checked against the bytes that remain before anything is
// allocated, every tensor's type, shape, alignment and extent are checked,
// and duplicate keys or tensor names are rejected. A malformed file yields an
// error wrapping [ErrCorrupt] (or [kernels.ErrUnknownType],
// [ErrUnsupportedVersion]) that names the file and the key or tensor at
// fault; it never panics. Metadata is copied out of the mapping, so
// [File.KVs] and the getters stay valid after [File.Close]; tensor data
// returned by [File.Tensor] points into the mapping and is valid only until
// Close.
//
// # Residency
//
// A process that uses only part of a mapped file (a cluster node hosting
// some of a model's experts) controls what of it stays resident:
// [File.Populate] reads a tensor's pages in now, [File.Release] drops the
// whole pages under a slice from the process (the page cache keeps them),
// and [File.SmallPages] turns off huge-page mappings so a release can split
// a large page-cache folio. Linux only; elsewhere they do nothing but
// Populate, which reads a byte per page.
//
// # Writing
//
// [Writer] collects metadata and tensors and writes a file that [Open] (and
// GGML-based tools) can read, padding the data section and every tensor to
// the alignment (32 bytes, or the uint32 "general.alignment" key).
//
// # Imports
//
// This package may import only github.com/conclave-ai/conclave/kernels (for
// the element types), the standard library and golang.org/x/sys.
package gguf
