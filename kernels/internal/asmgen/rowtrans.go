package main

import (
	"fmt"

	"github.com/mmcloughlin/avo/ir"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Offset corrections in the packed activation block as accumulator starting
// values (int32): −128·Σq for Q8_0 weights (w XOR 0x80 = w+128), −8·Σq for
// Q4_0 (raw nibbles q = w+8).
const (
	raNeg7 = 44
	raNeg3 = 48
)

// rowKernelVNNIMulti emits func(w *byte, stride, nb int, a *byte, astep int,
// out *float32, ostride int): the dot products of 16 weight rows with na
// packed activation rows in one pass over the weights. Block b of activation
// row r is at a + b·astep + r·raBlock (the rows' blocks interleaved); the
// result of weight row i and activation row r goes to out + r·ostride + 4i.
//
// Each block's weights are loaded, offset to unsigned (Q8_0: XOR 0x80; Q4_0:
// the nibbles split as rowKernelVNNI does) and transposed once, so that
// vector k holds bytes 4k..4k+3 of all 16 rows; every activation row then
// needs only eight VPDPBUSDs against a broadcast dword of its own block,
// summing straight into one int32 per (weight row, activation row) lane,
// starting from the block's offset correction. rowKernelVNNI's reduction
// tree instead costs 21 shuffles and adds per activation row per block; the
// transpose costs 24 shuffles per block whatever na is, so from two
// activation rows on it does less work, and the gap grows with na (a decode
// batch's experts see 2–8 rows each): 1.8× at four rows in L1.
//
// Transpose: P_j = [row j | row j+8] (eight dwords each), then
// VPUNPCK{L,H}DQ, VPUNPCK{L,H}QDQ and VSHUFI64X2 leave every T_k with its
// row lanes in the order 0–3, 8–11, 4–7, 12–15; the weight scales are
// gathered in that order and the accumulators put back in row order once,
// after the loop. Each lane does the same exact int32 block sum and the same
// float32 operations, block by block, as the Go dot, so the results are
// bit-identical to it.
func rowKernelVNNIMulti(name string, q4, gfni bool, na int) {
	TEXT(name, NOSPLIT, "func(w *byte, stride, nb int, a *byte, astep int, out *float32, ostride int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes the dot products of 16 weight rows with %d packed activation rows (blocks interleaved), bit-identical to the Go dot.", name, na))
	multiRowsRaw(name, q4, gfni, na)
}

// rowKernelVNNITiled emits func(wq, ws *byte, nb int, a *byte, astep int,
// out *float32, ostride int): rowKernelVNNIMulti for a weight tile that
// tilePackKernel has transposed already (quants at wq, 512 bytes a block;
// scales at ws, 32 bytes a block). A batch of many activation rows goes
// through each weight tile in several groups; packing the tile once saves
// every group but the first the loads, transpose and scale gather, about a
// quarter of the work at 16 rows.
func rowKernelVNNITiled(name string, q4 bool, na int) {
	TEXT(name, NOSPLIT, "func(wq, ws *byte, nb int, a *byte, astep int, out *float32, ostride int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes the dot products of a packed 16-row weight tile with %d packed activation rows (blocks interleaved), bit-identical to the Go dot.", name, na))
	multiRowsTiled(name, q4, na)
}

// multiRowsRaw is rowKernelVNNIMulti's body.
func multiRowsRaw(name string, q4, gfni bool, na int) {
	r := loadRows16()
	nb := Load(Param("nb"), GP64())
	ap := Load(Param("a"), GP64())
	astep := Load(Param("astep"), GP64())
	// pf sweeps the next tile (the 16 rows after these, contiguous) into L2
	// in address order, one iteration's share of it per iteration: the
	// per-row PREFETCHT0s below then find it there instead of in DRAM. In a
	// 16-stream decode step (experts at 2–8 rows) the experts took 3–5 %
	// less time with it, in three alternating pairs; sweeping two tiles
	// ahead, or into L1, or dropping the per-row prefetches measured worse.
	pf := GP64()
	LEAQ(Mem{Base: r.b[3], Index: r.stride, Scale: 4}, pf)

	rp := newRowPairs(q4, gfni)
	blk, neg := q8Bytes, offsetCorrection(q4)
	if q4 {
		blk = q4Bytes
	}
	facc := zeroedAccs(na)

	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))

	tk := transpose16(rp, r)
	dw := ZMM()
	VCVTPH2PS(laneScales(r), dw)

	blockRows(q4, ap, neg, tk, dw, facc)

	for i := range 16 {
		PREFETCHT0(r.mem(i, rowPrefetch))
	}
	for off := 0; off < 16*blk; off += 64 {
		PREFETCHT1(Mem{Base: pf, Disp: off})
	}
	ADDQ(U32(16*blk), pf)
	for k := range r.b {
		ADDQ(U32(blk), r.b[k])
	}
	ADDQ(astep, ap)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_done")
	storeRows(facc)
	VZEROUPPER()
	RET()
}

// vpdpbusdBcst emits VPDPBUSD.BCST m32, u8, dst: dst += Σ₄ u8(src1)·s8(m32)
// per dword, the memory dword broadcast to every lane.
func vpdpbusdBcst(m Mem, u8, dst VecVirtual) {
	Instruction(&ir.Instruction{
		Opcode:   "VPDPBUSD",
		Suffixes: []string{"BCST"},
		Operands: []Op{m, u8, dst},
		Inputs:   []Op{m, u8, dst},
		Outputs:  []Op{dst},
		ISA:      []string{"AVX512_VNNI"},
	})
}

// zeroZ emits VPXORD v, v, v marked as a zero idiom, so the allocator knows
// it reads nothing (avo v0.5.0 marks only VEX/SSE XORs so); otherwise v
// would be live from the function entry and across the loop.
func zeroZ(v Op) {
	Instruction(&ir.Instruction{
		Opcode:           "VPXORD",
		Operands:         []Op{v, v, v},
		Inputs:           []Op{v, v},
		Outputs:          []Op{v},
		ISA:              []string{"AVX512F"},
		CancellingInputs: true,
	})
}

// transpose16 loads the current block of the 16 rows (rp's offset applied)
// and transposes it: vector k holds bytes 4k..4k+3 of every row, rows in
// lane order 0–3, 8–11, 4–7, 12–15.
func transpose16(rp rowPairs, r rows16) [8]VecVirtual {
	// P_j: 128-bit lane q holds row j+8·(q>>1), dwords 4·(q&1)..+3.
	var p [8]VecVirtual
	for j := range p {
		p[j] = rp.load(r, j)
	}
	// Level 1: dwords of rows (2m, 2m+1) interleaved.
	var lo, hi [4]VecVirtual
	for m := range 4 {
		lo[m], hi[m] = ZMM(), ZMM()
		VPUNPCKLDQ(p[2*m+1], p[2*m], lo[m])
		VPUNPCKHDQ(p[2*m+1], p[2*m], hi[m])
	}
	// Level 2: within each 128-bit lane, dword t of rows 4g..4g+3; the lane
	// (q) still tells dwords t and 4+t apart.
	var x [2][4]VecVirtual
	for g := range 2 {
		for h, src := range [][4]VecVirtual{lo, hi} {
			a, b := src[2*g], src[2*g+1]
			x[g][2*h], x[g][2*h+1] = ZMM(), ZMM()
			VPUNPCKLQDQ(b, a, x[g][2*h])
			VPUNPCKHQDQ(b, a, x[g][2*h+1])
		}
	}
	// Level 3: the even 128-bit lanes are dword t, the odd ones 4+t.
	var tk [8]VecVirtual
	for t := range 4 {
		tk[t], tk[4+t] = ZMM(), ZMM()
		VSHUFI64X2(U8(0x88), x[1][t], x[0][t], tk[t])
		VSHUFI64X2(U8(0xdd), x[1][t], x[0][t], tk[4+t])
	}

	return tk
}

// laneScales gathers the current block's 16 F16 weight scales in the lane
// order of transpose16 into a YMM.
func laneScales(r rows16) VecVirtual {
	// Weight scales in lane order: rows 0–3, 8–11, 4–7, 12–15.
	x0s, x1s := XMM(), XMM()
	zeroZ(x0s.AsY()) // the upper half is read below (EVEX: x0s may be X16+)
	for _, k := range []int{0, 2, 1, 3} {
		q, t := GP64(), GP64()
		MOVWQZX(r.mem(4*k, 0), q)
		for i := 1; i < 4; i++ {
			MOVWQZX(r.mem(4*k+i, 0), t)
			SHLQ(U8(16*i), t)
			ORQ(t, q)
		}
		switch k {
		case 0:
			VMOVQ(q, x0s)
		case 2:
			VPINSRQ(U8(1), q, x0s, x0s)
		case 1:
			VMOVQ(q, x1s)
		default:
			VPINSRQ(U8(1), q, x1s, x1s)
		}
	}
	h := YMM()
	VINSERTI32X4(U8(1), x1s, x0s.AsY(), h)
	return h

}

// blockRows adds one block's products of the transposed weights tk (scales
// dw, lane order) with each packed activation row at ap to its
// accumulator in facc.
func blockRows(q4 bool, ap Register, neg int, tk [8]VecVirtual, dw VecVirtual, facc []VecVirtual) {
	for i := range facc {
		// Two chains of four products (the int32 sum is exact in any
		// order), half the dependent latency of one chain of eight.
		acc, acc2 := ZMM(), ZMM()
		VPBROADCASTD(Mem{Base: ap, Disp: raBlock*i + neg}, acc)
		zeroZ(acc2)
		for k := range 4 {
			vpdpbusdBcst(Mem{Base: ap, Disp: raBlock*i + 4*k}, tk[k], acc)
			vpdpbusdBcst(Mem{Base: ap, Disp: raBlock*i + 4*(k+4)}, tk[k+4], acc2)
		}
		VPADDD(acc2, acc, acc)
		sumf := ZMM()
		VCVTDQ2PS(acc, sumf)
		if q4 {
			// facc += float32(float32(sumi)·dw)·da, fused
			VMULPS(dw, sumf, sumf)
			VFMADD231PS_BCST(Mem{Base: ap, Disp: raBlock*i + raScale}, sumf, facc[i])
		} else {
			// facc += float32(sumi)·float32(dw·da), fused
			s := ZMM()
			VMULPS_BCST(Mem{Base: ap, Disp: raBlock*i + raScale}, dw, s)
			VFMADD231PS(s, sumf, facc[i])
		}
	}

}

// storeRows puts each accumulator's lanes back in row order and stores it
// to out (Param), a row of ostride bytes apart.
func storeRows(facc []VecVirtual) {
	out := Load(Param("out"), GP64())
	ostride := Load(Param("ostride"), GP64())
	na := len(facc)
	for i := range facc {
		VSHUFI64X2(U8(0xd8), facc[i], facc[i], facc[i]) // lanes 0, 2, 1, 3: row order
		VMOVUPS(facc[i], Mem{Base: out})
		if i+1 < na {
			ADDQ(ostride, out)
		}
	}
}

// offsetCorrection is the packed activation block's offset of the
// accumulator starting value for the weights' unsigned offset.
func offsetCorrection(q4 bool) int {
	if q4 {
		return raNeg3
	}
	return raNeg7
}

// zeroedAccs returns n ZMM accumulators set to zero.
func zeroedAccs(n int) []VecVirtual {
	facc := make([]VecVirtual, n)
	for i := range facc {
		facc[i] = ZMM()
		zeroZ(facc[i])
	}
	return facc
}

// multiRowsTiled is rowKernelVNNITiled's body.
func multiRowsTiled(name string, q4 bool, na int) {
	wq := Load(Param("wq"), GP64())
	ws := Load(Param("ws"), GP64())
	nb := Load(Param("nb"), GP64())
	ap := Load(Param("a"), GP64())
	astep := Load(Param("astep"), GP64())
	neg := offsetCorrection(q4)
	facc := zeroedAccs(na)
	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	var tk [8]VecVirtual
	for k := range tk {
		tk[k] = ZMM()
		VMOVDQU64(Mem{Base: wq, Disp: 64 * k}, tk[k])
	}
	dw := ZMM()
	VCVTPH2PS(Mem{Base: ws}, dw)
	blockRows(q4, ap, neg, tk, dw, facc)
	// Tiles the model keeps transposed stream from memory: fetch the
	// quants four blocks ahead into L1 and sixteen ahead non-temporally,
	// the scales eight ahead (measured on a 1024×2816 matrix cycled from
	// DRAM, 2 threads: 1.05× the transposing kernels at 1 row, 1.2× at 4,
	// 1.66× at 8; no prefetch was slower than them). The far prefetch was
	// PREFETCHT1: with PREFETCHNTA (on AMD Zen 5) a sixteen-stream decode
	// step's experts took 15.5 against 16.9 ms and a one-stream step's
	// 3.6 against 3.9 (medians of five rounds), the prefill unchanged: the
	// streamed weights, used once a step, no longer push out of the caches
	// what is used again (keys and values, activations).
	for off := 0; off < 512; off += 64 {
		PREFETCHT0(Mem{Base: wq, Disp: 4*512 + off})
	}
	for off := 0; off < 512; off += 64 {
		PREFETCHNTA(Mem{Base: wq, Disp: 16*512 + off})
	}
	PREFETCHT0(Mem{Base: ws, Disp: 8 * 32})
	ADDQ(U32(512), wq)
	ADDQ(U32(32), ws)
	ADDQ(astep, ap)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	storeRows(facc)
	VZEROUPPER()
	RET()
}
