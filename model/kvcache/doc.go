// Package kvcache holds the attention key/value cache of one sequence.
//
// A Cache owns, for every layer, the keys and values of the positions a
// sequence has seen so far, stored as F16 (the default, as llama.cpp does) or
// F32. It knows nothing about attention math; the model package writes rows
// at a position and reads them back.
//
// It imports only the kernels package (for F16 conversion and DType).
package kvcache
