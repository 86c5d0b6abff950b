package main

import (
	"fmt"

	"github.com/mmcloughlin/avo/ir"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Packed activation row of the VNNI row kernel (see packRowVNNI in Go), per
// block: 32 int8 quants, the float32 scale, 128·Σq and 8·Σq as int32.
const (
	raScale = 32
	raSum7  = 36
	raSum3  = 40
	raBlock = 64
)

// rows16 addresses the same byte of 16 weight rows from four base registers
// (rows 0–3, 4–7, 8–11, 12–15) and the stride.
type rows16 struct {
	b          [4]Register
	stride, s3 Register
}

// loadRows16 loads the w and stride parameters of a 16-row kernel and
// derives the row bases.
func loadRows16() rows16 {
	var r rows16
	r.b[0] = Load(Param("w"), GP64())
	r.stride = Load(Param("stride"), GP64())
	r.s3 = GP64()
	LEAQ(Mem{Base: r.stride, Index: r.stride, Scale: 2}, r.s3)
	for k := 1; k < 4; k++ {
		r.b[k] = GP64()
		LEAQ(Mem{Base: r.b[k-1], Index: r.stride, Scale: 4}, r.b[k])
	}
	return r
}

func (r rows16) mem(i, disp int) Mem {
	b := r.b[i/4]
	switch i % 4 {
	case 0:
		return Mem{Base: b, Disp: disp}
	case 1:
		return Mem{Base: b, Index: r.stride, Scale: 1, Disp: disp}
	case 2:
		return Mem{Base: b, Index: r.stride, Scale: 2, Disp: disp}
	default:
		return Mem{Base: b, Index: r.s3, Scale: 1, Disp: disp}
	}
}

// rowPrefetch is how far ahead (bytes) the VNNI row kernel prefetches each
// weight row into L1; 256–512 measured best on the decode DRAM benchmark
// (none: −15%, 1–2 KiB or PREFETCHT1: worse).
const rowPrefetch = 256

// rowKernelVNNI emits func(w *byte, stride, nb int, a *byte, out *[16]float32):
// the dot products of 16 weight rows with one packed activation row; lane i
// of the result is weight row i.
//
// Rows j and j+8 share a ZMM (low and high 256 bits), so one VPDPBUSD sums
// 64 products of two rows into 16 dwords. VPDPBUSD multiplies unsigned by
// signed bytes, so the weights are offset to unsigned (Q8_0: w XOR 0x80 =
// w+128; Q4_0: the raw nibbles, w+8) and the activation block's offset sum
// (128·Σa or 8·Σa, from the pack) is subtracted from every row's exact
// int32 block sum. The eight ZMMs (128 dwords) reduce to 16 row sums by
// three levels of blend + two-source permute + add, with no VPHADDD. The 16
// f16 weight scales are packed four to a GPR (cheaper than VPGATHERDD or
// VPINSRW here) and converted together. Q4_0 splits nibbles with one
// VGF2P8AFFINEQB when gfni, else with VPSRLVQ and VPANDD.
func rowKernelVNNI(name string, q4, gfni bool) {
	TEXT(name, NOSPLIT, "func(w *byte, stride, nb int, a *byte, out *[16]float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes out[i] = dot(weight row i, a) for 16 weight rows and a packed activation row, bit-identical to the Go dot.", name))
	r := loadRows16()
	nb := Load(Param("nb"), GP64())
	ap := Load(Param("a"), GP64())

	// Reduction: level n (distance d = 1, 2, 4 dwords) combines A and B so
	// that lane ℓ holds a pair sum of A where bit d of ℓ is clear and of B
	// where it is set: blend(A, B) + permute(A, B).
	type level struct {
		k   Register
		idx VecVirtual
	}
	var lv [3]level
	for n, d := range []int{1, 2, 4} {
		var m uint32
		for l := range 16 {
			if l&d != 0 {
				m |= 1 << l
			}
		}
		lv[n].k = kmask(m)
		lv[n].idx = ZMM()
		VMOVDQU64(vecConst(fmt.Sprintf("rv16perm%d", d), func(l int) uint32 {
			if l&d == 0 {
				return uint32(l + d)
			}
			return uint32(16 + l - d)
		}), lv[n].idx)
	}
	combine := func(n int, a, b VecVirtual) VecVirtual {
		t := ZMM()
		VPBLENDMD(b, a, lv[n].k, t)
		VPERMT2D(b, lv[n].idx, a)
		VPADDD(t, a, a)
		return a
	}

	rp := newRowPairs(q4, gfni)
	blk := q8Bytes
	if q4 {
		blk = q4Bytes
	}
	facc := ZMM()
	VPXORD(facc, facc, facc)

	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))

	act := ZMM()
	VBROADCASTI64X4(Mem{Base: ap}, act)
	var acc [8]VecVirtual
	for j := range acc {
		v := rp.load(r, j)
		acc[j] = ZMM()
		VPXORD(acc[j], acc[j], acc[j])
		vpdpbusd(act, v, acc[j])
	}
	// acc[j] lanes 0–7: row j, lanes 8–15: row j+8; after the three levels
	// lane ℓ is row ℓ.
	x0, x1 := combine(0, acc[0], acc[1]), combine(0, acc[2], acc[3])
	x2, x3 := combine(0, acc[4], acc[5]), combine(0, acc[6], acc[7])
	y0, y1 := combine(1, x0, x1), combine(1, x2, x3)
	sumi := combine(2, y0, y1)
	off := raSum7
	if q4 {
		off = raSum3
	}
	VPSUBD_BCST(Mem{Base: ap, Disp: off}, sumi, sumi)
	sumf := ZMM()
	VCVTDQ2PS(sumi, sumf)

	// Weight scales: rows 4k..4k+3 packed into one GPR.
	var q [4]Register
	t := GP64()
	for k := range q {
		q[k] = GP64()
		MOVWQZX(r.mem(4*k, 0), q[k])
		for i := 1; i < 4; i++ {
			MOVWQZX(r.mem(4*k+i, 0), t)
			SHLQ(U8(16*i), t)
			ORQ(t, q[k])
		}
	}
	x0s, x1s := XMM(), XMM()
	VMOVQ(q[0], x0s)
	VPINSRQ(U8(1), q[1], x0s, x0s)
	VMOVQ(q[2], x1s)
	VPINSRQ(U8(1), q[3], x1s, x1s)
	h := YMM()
	VINSERTI32X4(U8(1), x1s, x0s.AsY(), h)
	dw := ZMM()
	VCVTPH2PS(h, dw)
	if q4 {
		// facc += float32(float32(sumi)·dw)·da, fused
		VMULPS(dw, sumf, sumf)
		VFMADD231PS_BCST(Mem{Base: ap, Disp: raScale}, sumf, facc)
	} else {
		// facc += float32(sumi)·float32(dw·da), fused
		VMULPS_BCST(Mem{Base: ap, Disp: raScale}, dw, dw)
		VFMADD231PS(dw, sumf, facc)
	}

	for i := range 16 {
		PREFETCHT0(r.mem(i, rowPrefetch))
	}
	for k := range r.b {
		ADDQ(U32(blk), r.b[k])
	}
	ADDQ(U32(raBlock), ap)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_done")
	out := Load(Param("out"), GP64())
	VMOVUPS(facc, Mem{Base: out})
	VZEROUPPER()
	RET()
}

// kmask returns a mask register holding m.
func kmask(m uint32) Register {
	g := GP32()
	MOVL(U32(m), g)
	k := K()
	KMOVW(g, k)
	return k
}

var vecConsts = map[string]Mem{}

// vecConst returns a 64-byte read-only table of 16 dwords f(0..15), emitted
// once per name.
func vecConst(name string, f func(i int) uint32) Mem {
	if m, ok := vecConsts[name]; ok {
		return m
	}
	m := GLOBL(name, RODATA|NOPTR)
	for i := range 16 {
		DATA(4*i, U32(f(i)))
	}
	vecConsts[name] = m
	return m
}

// gf2p8affineqb emits VGF2P8AFFINEQB $0, m, x, dst: every byte of x through
// the 8×8 bit matrix of its qword of m (which avo v0.5.0 does not know).
func gf2p8affineqb(m, x, dst VecVirtual) {
	Instruction(&ir.Instruction{
		Opcode:   "VGF2P8AFFINEQB",
		Operands: []Op{U8(0), m, x, dst},
		Inputs:   []Op{m, x},
		Outputs:  []Op{dst},
		ISA:      []string{"GFNI", "AVX512F"},
	})
}

// rowPairs loads the weight blocks of a 16-row tile two rows to a ZMM, as
// every VNNI row kernel reads them: row j in the low 256 bits and row j+8 in
// the high, offset to unsigned bytes (Q8_0: XOR 0x80; Q4_0: the nibbles
// split, low nibbles the block's elements 0–15, high ones 16–31).
type rowPairs struct {
	q4, gfni          bool
	c80               VecVirtual // Q8_0 offset bytes
	khi               Register   // the upper half: qwords 4–7 (Q8_0), dwords 8–15 (Q4_0)
	mask, shifts, nib VecVirtual // the Q4_0 nibble split: nib with GFNI, else mask and shifts
}

// newRowPairs loads the constants of the row-pair loads.
func newRowPairs(q4, gfni bool) rowPairs {
	rp := rowPairs{q4: q4, gfni: gfni}
	if !q4 {
		rp.c80, rp.khi = bcastByte(0x80, true), kmask(0xf0)
		return rp
	}
	if gfni {
		rp.nib = ZMM()
		VMOVDQU64(vecConst("rv16nib", func(i int) uint32 {
			// GF2P8AFFINEQB bit matrices per qword: x & 0x0f for the
			// low 16 bytes of each 32, x >> 4 for the high 16.
			switch {
			case i%2 == 0:
				return 0
			case i%8 >= 4:
				return 0x10204080
			default:
				return 0x01020408
			}
		}), rp.nib)
	} else {
		rp.mask = bcastByte(0x0f, true)
		rp.shifts = ZMM()
		VMOVDQU64(vecConst("rv16shift", func(i int) uint32 {
			if i%8 >= 4 && i%2 == 0 {
				return 4
			}
			return 0
		}), rp.shifts)
	}
	rp.khi = kmask(0xff00)
	return rp
}

// load returns rows j and j+8 of the tile's current block (r's bases).
func (rp rowPairs) load(r rows16, j int) VecVirtual {
	v := ZMM()
	if rp.q4 {
		VBROADCASTI32X4(r.mem(j, 2), v)
		VBROADCASTI32X4(r.mem(j+8, 2), rp.khi, v)
		if rp.gfni {
			gf2p8affineqb(rp.nib, v, v)
		} else {
			VPSRLVQ(rp.shifts, v, v)
			VPANDD(rp.mask, v, v)
		}
		return v
	}
	// Row j (upper half zeroed by the load), row j+8 (lower half zeroed by
	// the mask), merged and offset by one VPTERNLOGD. The zero idiom (free
	// at rename) tells the allocator v's upper half is dead, so v is not
	// live across the loop.
	u := ZMM()
	zeroZ(v)
	VMOVDQU64(r.mem(j, 2), v.AsY()) // EVEX: v may be Y16–Y31
	VBROADCASTI64X4_Z(r.mem(j+8, 2), rp.khi, u)
	VPTERNLOGD(U8(0x56), rp.c80, u, v) // v = (v | u) ^ c80
	return v
}
