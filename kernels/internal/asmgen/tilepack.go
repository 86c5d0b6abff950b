package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
)

// tilePackKernel emits func(w *byte, stride, nb int, ws, wq *byte): the
// weight tile of 16 rows (w, stride bytes apart) as the multi-row VNNI
// kernels see it after their transpose (transpose16, offset to unsigned),
// for rowKernelVNNITiled: per block b the 16 F16 scales in lane order at
// ws+32b and the eight transposed vectors at wq+512b.
func tilePackKernel(name string, q4, gfni bool) {
	TEXT(name, NOSPLIT, "func(w *byte, stride, nb int, ws, wq *byte)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s packs 16 weight rows into the transposed tile layout of the tiled multi-row VNNI kernels.", name))
	r := loadRows16()
	nb := Load(Param("nb"), GP64())
	ws := Load(Param("ws"), GP64())
	wq := Load(Param("wq"), GP64())
	rp := newRowPairs(q4, gfni)
	blk := q8Bytes
	if q4 {
		blk = q4Bytes
	}
	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	tk := transpose16(rp, r)
	for k, v := range tk {
		VMOVDQU64(v, Mem{Base: wq, Disp: 64 * k})
	}
	VMOVDQU32(laneScales(r), Mem{Base: ws})
	for i := range 16 {
		PREFETCHT0(r.mem(i, rowPrefetch))
	}
	for k := range r.b {
		ADDQ(U32(blk), r.b[k])
	}
	ADDQ(U32(32), ws)
	ADDQ(U32(512), wq)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}
