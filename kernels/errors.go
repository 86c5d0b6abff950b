package kernels

import "errors"

// ErrLength is returned when a buffer is too short for the element count, or
// the element count is not a multiple of the type's block size.
var ErrLength = errors.New("kernels: buffer length does not match element count")

// ErrUnsupported is returned for a known type that has no implementation of
// the requested operation (for example quantizing to Q4_1).
var ErrUnsupported = errors.New("kernels: operation not supported for type")
