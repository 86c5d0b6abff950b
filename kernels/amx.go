package kernels

// AMX tiles (Intel Advanced Matrix Extensions, Sapphire Rapids and later)
// for the wide batches of prefill.
//
// The VNNI kernels spend 14 vector operations per activation row, block
// and 16 weight rows, 8 of them VPDPBUSDs. One TDPBSSD instead multiplies
// a block of up to 16 activation rows by the same block of a packed
// 16-row weight tile into 16 × 16 exact int32 sums, on the tile unit. What
// is left for the vector units is the scaling every Q8_0 block needs, 3
// operations per activation row: d = dw·da, acc += float32(sumi)·d, fused,
// exactly as the VNNI kernels compute it, so every output stays
// bit-identical to VecDot.
//
// The tile unit cannot hand its sums to vector registers, so each block's
// are stored to a small ring and scaled an iteration later, while the tile
// unit works on the next pairs of blocks (internal/amxgen says how the ring
// keeps those loads clear of the stores still draining). The packed tiles
// hold the quants offset to unsigned for VPDPBUSD; a worker flips each
// tile back to signed once (signQuants) and runs every activation row of
// the chunk through it in one call, 16 rows at a time, prefetching the
// next tile meanwhile.
//
// Measured on the 2-core VM these numbers come from (docs/performance.md):
// one bench layer's experts at 128 rows each 1.19× the VNNI kernels, the
// 16-prompt prefill wave 1.06–1.12×. The vector units' scaling does not
// overlap the tile unit's work there, which bounds the gain.

// amxMinRows is the fewest activation rows (in one chunk) that MatMul runs
// on AMX: the tile unit costs a fixed time per block whatever the rows, and
// at 32 rows the two paths are even (BenchmarkMatMulAMX). A var for tests
// and benchmarks.
var amxMinRows = 64

// amxRows is the most activation rows one AMX kernel call takes.
const amxRows = 16

// AMX reports whether MatMul runs wide Q8_0 batches on AMX tiles: the CPU
// has AMX-INT8 and AVX-512 VNNI, CONCLAVE_AMX is not off, and the OS
// granted the tile state (asked for by the first call that finds the rest
// true).
func AMX() bool { return useAMX && useSIMD >= simdAVX512VNNI && amxGranted() }

// amxTileConfigs[m-1] is the 64-byte LDTILECFG operand of the kernels for
// m activation rows: palette 1; tmm0/tmm1 m rows of 32 bytes (A: one block
// of each activation row), tmm2/tmm3 8 rows of 64 (B: one block of the
// weight tile), tmm4..tmm7 m rows of 64 (C: the int32 sums).
var amxTileConfigs = func() (c [amxRows][64]byte) {
	for m := 1; m <= amxRows; m++ {
		cfg := &c[m-1]
		cfg[0] = 1
		for i, t := range [8][2]int{{m, 32}, {m, 32}, {8, 64}, {8, 64}, {m, 64}, {m, 64}, {m, 64}, {m, 64}} {
			cfg[16+2*i] = byte(t[1])
			cfg[48+i] = byte(t[0])
		}
	}
	return
}()
