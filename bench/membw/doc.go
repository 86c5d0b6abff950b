// Package membw measures the memory bandwidth a process can reach, with a
// STREAM-style triad (a[i] = b[i] + s·c[i]) over float64 arrays far larger
// than the last-level cache. It is the ceiling that decode speed is judged
// against: decoding one token streams every active weight once, so
// tokens/s × bytes/token cannot exceed it.
//
// It imports only the standard library.
package membw
