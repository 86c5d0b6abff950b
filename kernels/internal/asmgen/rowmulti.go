package main

import (
	"fmt"

	"github.com/mmcloughlin/avo/ir"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// rowKernelVNNIMulti emits func(w *byte, stride, nb int, a *byte, astep int,
// out *float32, ostride int): the dot products of 16 weight rows with na
// packed activation rows in one pass over the weights. Block b of activation
// row r is at a + b·astep + r·raBlock (the rows' blocks interleaved); the
// result of weight row i and activation row r goes to out + r·ostride + 4i.
//
// Each weight block is loaded and offset once and fed to VPDPBUSD against
// every activation row; each (weight row, activation row) lane then performs
// exactly what rowKernelVNNI's lane does (the same exact int32 block sum, the
// same float32 multiplies and add, block by block in order), so the results
// are bit-identical to it and to the Go dot. The reduction is interleaved
// with the products (pairs of weight vectors at a time) to bound the live
// vector registers at na·4 + 9.
func rowKernelVNNIMulti(name string, q4, gfni bool, na int) {
	TEXT(name, NOSPLIT, "func(w *byte, stride, nb int, a *byte, astep int, out *float32, ostride int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes the dot products of 16 weight rows with %d packed activation rows (blocks interleaved), bit-identical to the Go dot.", name, na))
	var r rows16
	r.b[0] = Load(Param("w"), GP64())
	r.stride = Load(Param("stride"), GP64())
	nb := Load(Param("nb"), GP64())
	ap := Load(Param("a"), GP64())
	astep := Load(Param("astep"), GP64())
	r.s3 = GP64()
	LEAQ(Mem{Base: r.stride, Index: r.stride, Scale: 2}, r.s3)
	for k := 1; k < 4; k++ {
		r.b[k] = GP64()
		LEAQ(Mem{Base: r.b[k-1], Index: r.stride, Scale: 4}, r.b[k])
	}

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
		blendmd(b, a, lv[n].k, t)
		VPERMT2D(b, lv[n].idx, a)
		VPADDD(t, a, a)
		return a
	}

	var c80, mask, shifts, nib VecVirtual
	var khi Register
	blk := q8Bytes
	if q4 {
		blk = q4Bytes
		if gfni {
			nib = ZMM()
			VMOVDQU64(vecConst("rv16nib", func(i int) uint32 {
				switch {
				case i%2 == 0:
					return 0
				case i%8 >= 4:
					return 0x10204080
				default:
					return 0x01020408
				}
			}), nib)
		} else {
			mask = bcastByte(0x0f, true)
			shifts = ZMM()
			VMOVDQU64(vecConst("rv16shift", func(i int) uint32 {
				if i%8 >= 4 && i%2 == 0 {
					return 4
				}
				return 0
			}), shifts)
		}
		khi = kmask(0xff00)
	} else {
		c80 = bcastByte(0x80, true)
		khi = kmask(0xf0)
	}
	facc := make([]VecVirtual, na)
	for i := range facc {
		facc[i] = ZMM()
		zeroZ(facc[i])
	}

	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))

	act := make([]VecVirtual, na)
	for i := range act {
		act[i] = ZMM()
		VBROADCASTI64X4(Mem{Base: ap, Disp: raBlock * i}, act[i])
	}
	loadW := func(j int) VecVirtual {
		v := ZMM()
		if q4 {
			VBROADCASTI32X4(r.mem(j, 2), v)
			VBROADCASTI32X4(r.mem(j+8, 2), khi, v)
			if gfni {
				gf2p8affineqb(nib, v, v)
			} else {
				VPSRLVQ(shifts, v, v)
				VPANDD(mask, v, v)
			}
		} else {
			// The zero idiom (free at rename) tells the allocator v's
			// upper half is dead, so v is not live across the loop.
			u := ZMM()
			zeroZ(v)
			VMOVDQU64(r.mem(j, 2), v.AsY())
			VBROADCASTI64X4_Z(r.mem(j+8, 2), khi, u)
			VPTERNLOGD(U8(0x56), c80, u, v)
		}
		return v
	}
	prod := func(v, a VecVirtual) VecVirtual {
		acc := ZMM()
		zeroZ(acc)
		vpdpbusd(a, v, acc)
		return acc
	}
	// x[p][i]: level-0 combine of weight vectors 2p, 2p+1 for activation i;
	// y[q][i]: level 1 of x[2q], x[2q+1].
	y := make([][]VecVirtual, 2)
	for q := range 2 {
		var x0 []VecVirtual
		for p := 2 * q; p < 2*q+2; p++ {
			v0, v1 := loadW(2*p), loadW(2*p+1)
			xs := make([]VecVirtual, na)
			for i := range na {
				xs[i] = combine(0, prod(v0, act[i]), prod(v1, act[i]))
			}
			if p == 2*q {
				x0 = xs
				continue
			}
			y[q] = make([]VecVirtual, na)
			for i := range na {
				y[q][i] = combine(1, x0[i], xs[i])
			}
		}
	}
	off := raSum7
	if q4 {
		off = raSum3
	}

	// Weight scales: rows 4k..4k+3 packed into one GPR at a time.
	x0s, x1s := XMM(), XMM()
	VPXOR(x0s.AsY(), x0s.AsY(), x0s.AsY()) // the upper half is read below
	for k := range 4 {
		q, t := GP64(), GP64()
		MOVWQZX(r.mem(4*k, 0), q)
		for i := 1; i < 4; i++ {
			MOVWQZX(r.mem(4*k+i, 0), t)
			SHLQ(U8(16*i), t)
			ORQ(t, q)
		}
		xs := x0s
		if k >= 2 {
			xs = x1s
		}
		if k%2 == 0 {
			VMOVQ(q, xs)
		} else {
			VPINSRQ(U8(1), q, xs, xs)
		}
	}
	h := YMM()
	VINSERTI32X4(U8(1), x1s, x0s.AsY(), h)
	dw := ZMM()
	VCVTPH2PS(h, dw)

	for i := range na {
		sumi := combine(2, y[0][i], y[1][i])
		VPSUBD_BCST(Mem{Base: ap, Disp: raBlock*i + off}, sumi, sumi)
		sumf := ZMM()
		VCVTDQ2PS(sumi, sumf)
		if q4 {
			// sumf += float32(float32(sumi)·dw)·da
			VMULPS(dw, sumf, sumf)
			VMULPS_BCST(Mem{Base: ap, Disp: raBlock*i + raScale}, sumf, sumf)
		} else {
			// sumf += float32(sumi)·float32(dw·da)
			s := ZMM()
			VMULPS_BCST(Mem{Base: ap, Disp: raBlock*i + raScale}, dw, s)
			VMULPS(s, sumf, sumf)
		}
		VADDPS(sumf, facc[i], facc[i])
	}

	for i := range 16 {
		PREFETCHT0(r.mem(i, rowPrefetch))
	}
	for k := range r.b {
		ADDQ(U32(blk), r.b[k])
	}
	ADDQ(astep, ap)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_done")
	out := Load(Param("out"), GP64())
	ostride := Load(Param("ostride"), GP64())
	for i := range na {
		VMOVUPS(facc[i], Mem{Base: out})
		if i+1 < na {
			ADDQ(ostride, out)
		}
	}
	VZEROUPPER()
	RET()
}

// zeroZ emits VPXORD v, v, v marked as a zero idiom, so the allocator knows
// it reads nothing (avo v0.5.0 marks only VEX/SSE XORs so); otherwise v
// would be live from the function entry and across the loop.
func zeroZ(v VecVirtual) {
	Instruction(&ir.Instruction{
		Opcode:           "VPXORD",
		Operands:         []Op{v, v, v},
		Inputs:           []Op{v, v},
		Outputs:          []Op{v},
		ISA:              []string{"AVX512F"},
		CancellingInputs: true,
	})
}

// blendmd emits VPBLENDMD b, a, k, t (t = a where k is clear, b where set),
// declaring that it writes t whole: avo v0.5.0 treats a masked destination
// as read, which would keep t live from the function entry.
func blendmd(b, a VecVirtual, k Register, t VecVirtual) {
	Instruction(&ir.Instruction{
		Opcode:   "VPBLENDMD",
		Operands: []Op{b, a, k, t},
		Inputs:   []Op{b, a, k},
		Outputs:  []Op{t},
		ISA:      []string{"AVX512F"},
	})
}
