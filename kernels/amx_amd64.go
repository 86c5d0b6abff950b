//go:build amd64 && !purego

package kernels

import (
	"os"
	"sync"

	"golang.org/x/sys/cpu"
)

// hwAMX reports whether the CPU can run the AMX kernels: AMX-INT8 beside
// the AVX-512 the scaling needs.
var hwAMX = cpu.X86.HasAMXTile && cpu.X86.HasAMXInt8 && cpuSIMD >= simdAVX512VNNI

// useAMX is whether MatMul may use them: unless CONCLAVE_AMX=off (a way
// out on a machine whose tile unit misbehaves, and for comparisons); tests
// clear it to cover the rest.
var useAMX = hwAMX && os.Getenv("CONCLAVE_AMX") != "off"

// amxPerm holds the OS's answer to the request for the tile state, made
// once, on the first chunk that would run on AMX: the grant is for the
// whole process and cannot be taken back (Linux then refuses alternate
// signal stacks under ~12 KB, which matters only to C code in the process),
// so a process that never needs it, or has it switched off, never asks.
var amxPerm struct {
	once sync.Once
	ok   bool
}

// amxGranted asks for the tile state the first time and reports whether
// the process holds it.
func amxGranted() bool {
	amxPerm.once.Do(func() { amxPerm.ok = amxPermitted() })
	return amxPerm.ok
}

// amxTile computes a packed weight tile (scales ws, quants wq as
// PackTiles lays them out, nb blocks) against groups·na packed activation
// rows at a (blocks astep bytes apart, na ≤ 16) into out (rows ostride
// floats apart). sq (nb·512 bytes) must hold wq's quants made signed by
// signQuants; ring is amxRingBytes of scratch. More than one group needs
// an even nb. The kernel prefetches into L2 from pf on (the next tile:
// prefetches never fault, so pf need not be a whole tile).
func amxTile(na, groups int, ws, sq []byte, nb int, a []byte, astep int, out []float32, ostride int, ring []byte, pf *byte) {
	if groups > 1 && nb%2 != 0 {
		panic("kernels: amxTile: several groups with an odd block count")
	}
	rows := groups * na
	_ = ws[nb*32-1]
	_ = sq[nb*512-1]
	_ = a[(nb-1)*astep+(rows-1)*raBlock+raBlock-1]
	_ = out[(rows-1)*ostride+rowTile16-1]
	_ = ring[amxRingBytes-1]
	amxKernels[na-1](&amxTileConfigs[na-1][0], &sq[0], &ws[0], nb, &a[0], astep, &out[0], 4*ostride, &ring[0], groups, pf)
}

// signTile writes wq (a packed tile's quants) to sq with every byte XOR
// 0x80.
func signTile(sq, wq []byte) {
	_ = sq[len(wq)-1]
	if len(wq)%256 != 0 {
		panic("kernels: signTile: length not a multiple of 256")
	}
	signQuants(&sq[0], &wq[0], len(wq))
}
