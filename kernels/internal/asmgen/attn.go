package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Float32 vector kernels (attention and friends), in AVX2, with AVX-512
// twins of the attention kernels for head sizes that are multiples of 16.
// Every element gets the same operations in the same order on every level,
// so a result never depends on the level.
//
// Dot products have one defined reduction order that the Go fallback
// (kernels/attn.go dotF32Go) reproduces: 16 lanes, lane j accumulating
// elements j, j+16, j+32, … as float32(a·b) then add (VMULPS, VADDPS, never
// FMA); then lanes j+8 into j, j+4 into j, j+2 into j, 1 into 0. The
// kernels take lengths that are multiples of 16; the Go side adds any tail.

// reduce16 folds the 16 lanes of acc0 (lanes 0–7) and acc1 (lanes 8–15) in
// the defined order and returns an XMM whose lane 0 is the sum.
func reduce16(acc0, acc1 VecVirtual) VecVirtual {
	VADDPS(acc1, acc0, acc0) // j + (j+8)
	h := XMM()
	VEXTRACTF128(U8(1), acc0, h)
	VADDPS(h, acc0.AsX(), h) // j + (j+4)
	t := XMM()
	VMOVHLPS(h, h, t)
	VADDPS(t, h, h) // j + (j+2)
	VMOVSHDUP(h, t)
	VADDSS(t, h, h) // 0 + 1
	return h
}

// elemBytes is the byte size of a key or value element.
func elemBytes(f16 bool) int {
	if f16 {
		return 2
	}
	return 4
}

// loadF32x8 loads 8 elements at m as float32, converting F16.
func loadF32x8(m Mem, f16 bool) VecVirtual {
	y := YMM()
	if f16 {
		VCVTPH2PS(m, y)
	} else {
		VMOVUPS(m, y)
	}
	return y
}

// dotKernel emits func(a, b *float32, n int) float32 for n a multiple of 16.
func dotKernel() {
	const name = "dotF32x16AVX2"
	TEXT(name, NOSPLIT, "func(a, b *float32, n int) float32")
	Pragma("noescape")
	Doc(name + " returns the 16-lane dot product of a and b (n a multiple of 16) in the defined order.")
	a := Load(Param("a"), GP64())
	b := Load(Param("b"), GP64())
	n := Load(Param("n"), GP64())
	acc0, acc1 := YMM(), YMM()
	VXORPS(acc0, acc0, acc0)
	VXORPS(acc1, acc1, acc1)
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	for i, acc := range []VecVirtual{acc0, acc1} {
		x := YMM()
		VMOVUPS(Mem{Base: a, Disp: 32 * i}, x)
		VMULPS(Mem{Base: b, Disp: 32 * i}, x, x)
		VADDPS(x, acc, acc)
	}
	ADDQ(U32(64), a)
	ADDQ(U32(64), b)
	SUBQ(U32(16), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	s := reduce16(acc0, acc1)
	Store(s, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// axpyKernel emits func(dst *float32, a float32, x *float32, n int):
// dst[i] += float32(a·x[i]) for n a multiple of 8.
func axpyKernel() {
	const name = "axpyF32x8AVX2"
	TEXT(name, NOSPLIT, "func(dst *float32, a float32, x *float32, n int)")
	Pragma("noescape")
	Doc(name + " computes dst[i] += a·x[i] (product rounded, then added) for n a multiple of 8.")
	dst := Load(Param("dst"), GP64())
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	av := YMM()
	a := Load(Param("a"), XMM())
	VBROADCASTSS(a, av)
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	v := YMM()
	VMULPS(Mem{Base: x}, av, v)
	VADDPS(Mem{Base: dst}, v, v)
	VMOVUPS(v, Mem{Base: dst})
	ADDQ(U32(32), dst)
	ADDQ(U32(32), x)
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// scaleKernel emits scaleF32x8AVX2, func(dst, x *float32, s float32, n int):
// dst[i] = x[i]·s, or with weighted scaleMulF32x8AVX2, func(dst, x, w
// *float32, s float32, n int): dst[i] = (x[i]·s)·w[i]; n a multiple of 8,
// each product rounded (no fused multiply), as the Go loops compute them.
// x is the first source of the first product, and x·s of the second, as in
// the Go loops' MULSS: where both factors are NaN, that NaN is kept.
func scaleKernel(weighted bool) {
	name, sig, doc := "scaleF32x8AVX2", "func(dst *float32, x *float32, s float32, n int)", " sets dst[i] = x[i]·s for n a multiple of 8 (dst may be x)."
	if weighted {
		name, sig, doc = "scaleMulF32x8AVX2", "func(dst *float32, x *float32, w *float32, s float32, n int)", " sets dst[i] = (x[i]·s)·w[i], both products rounded, for n a multiple of 8 (dst may be x)."
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(name + doc)
	dst := Load(Param("dst"), GP64())
	x := Load(Param("x"), GP64())
	var w Register
	if weighted {
		w = Load(Param("w"), GP64())
	}
	n := Load(Param("n"), GP64())
	sv := YMM()
	sx := Load(Param("s"), XMM())
	VBROADCASTSS(sx, sv)
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	v := YMM()
	VMOVUPS(Mem{Base: x}, v)
	VMULPS(sv, v, v)
	if weighted {
		VMULPS(Mem{Base: w}, v, v)
	}
	VMOVUPS(v, Mem{Base: dst})
	ADDQ(U32(32), dst)
	ADDQ(U32(32), x)
	if weighted {
		ADDQ(U32(32), w)
	}
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// f16RowKernel emits func(dst *float32, src *uint16, n int) for n a multiple
// of 8: VCVTPH2PS is exact, like the table.
func f16RowKernel() {
	const name = "f16ToF32x8AVX2"
	TEXT(name, NOSPLIT, "func(dst *float32, src *uint16, n int)")
	Pragma("noescape")
	Doc(name + " converts n F16 values (a multiple of 8) to float32.")
	dst := Load(Param("dst"), GP64())
	src := Load(Param("src"), GP64())
	n := Load(Param("n"), GP64())
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	v := YMM()
	VCVTPH2PS(Mem{Base: src}, v)
	VMOVUPS(v, Mem{Base: dst})
	ADDQ(U32(32), dst)
	ADDQ(U32(16), src)
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// scoresKernel emits
// func(scores, q *float32, heads, hd int, k *T, stride, n int):
// scores[gi·n+t] = dot(q[gi·hd:(gi+1)·hd], k[t·stride:t·stride+hd]) for
// gi < g, t < n, in the defined 16-lane order; hd a multiple of 16, g ≥ 1.
// Keys are F16 or F32; stride is in elements.
func scoresKernel(f16 bool) {
	name := "attnScoresF32AVX2"
	kt := "float32"
	if f16 {
		name, kt = "attnScoresF16AVX2", "uint16"
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(scores, q *float32, heads, hd int, k *%s, stride, n int)", kt))
	Pragma("noescape")
	Doc(name + " computes the scores of g query heads against n key rows (hd a multiple of 16).")
	es := elemBytes(f16)
	sT := Load(Param("scores"), GP64())
	kT := Load(Param("k"), GP64())
	stride := Load(Param("stride"), GP64())
	SHLQ(U8(es/2), stride) // bytes
	n := Load(Param("n"), GP64())
	nB := GP64()
	MOVQ(n, nB)
	SHLQ(U8(2), nB) // bytes between query heads' score rows

	Label(name + "_t")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	qq := Load(Param("q"), GP64())
	sp := GP64()
	MOVQ(sT, sp)
	gi := Load(Param("heads"), GP64())
	Label(name + "_g")
	acc0, acc1 := YMM(), YMM()
	VXORPS(acc0, acc0, acc0)
	VXORPS(acc1, acc1, acc1)
	kp := GP64()
	MOVQ(kT, kp)
	d := Load(Param("hd"), GP64())
	Label(name + "_d")
	for i, acc := range []VecVirtual{acc0, acc1} {
		x := loadF32x8(Mem{Base: kp, Disp: 8 * es * i}, f16)
		VMULPS(Mem{Base: qq, Disp: 32 * i}, x, x)
		VADDPS(x, acc, acc)
	}
	ADDQ(U32(16*es), kp)
	ADDQ(U32(64), qq)
	SUBQ(U32(16), d)
	JNZ(LabelRef(name + "_d"))
	s := reduce16(acc0, acc1)
	VMOVSS(s, Mem{Base: sp})
	ADDQ(nB, sp)
	DECQ(gi)
	JNZ(LabelRef(name + "_g"))

	prefetchRow(kT, stride, 128*es) // the largest head size used; a shorter one prefetches the next head's start too
	ADDQ(stride, kT)
	ADDQ(U32(4), sT)
	DECQ(n)
	JMP(LabelRef(name + "_t"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// kvPrefetchRows is how many key or value rows ahead the attention
// kernels prefetch: the rows are a cache row (all kv heads) apart, a
// stride the hardware prefetchers follow poorly, and a decode step's
// attention reads each of them once.
const kvPrefetchRows = 8

// prefetchRow prefetches the first bytes of the row kvPrefetchRows rows
// past row (rows stride bytes apart).
func prefetchRow(row, stride Register, bytes int) {
	pf := GP64()
	MOVQ(stride, pf)
	SHLQ(U8(3), pf) // kvPrefetchRows
	ADDQ(row, pf)
	for off := 0; off < bytes; off += 64 {
		PREFETCHT0(Mem{Base: pf, Disp: off})
	}
}

// accumKernel emits
// func(out, p *float32, heads, hd int, v *T, stride, n int):
// for t = 0, 1, …, n−1 in order: out[gi·hd+d] += float32(p[gi·n+t]·v[t·stride+d])
// for gi < g, d < hd; hd a multiple of 8, g ≥ 1. Values are F16 or F32;
// stride is in elements.
func accumKernel(f16 bool) {
	name := "attnAccumF32AVX2"
	vt := "float32"
	if f16 {
		name, vt = "attnAccumF16AVX2", "uint16"
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(out, p *float32, heads, hd int, v *%s, stride, n int)", vt))
	Pragma("noescape")
	Doc(name + " accumulates n probability-weighted value rows into g output heads, positions in order (hd a multiple of 8).")
	es := elemBytes(f16)
	pT := Load(Param("p"), GP64())
	vT := Load(Param("v"), GP64())
	stride := Load(Param("stride"), GP64())
	SHLQ(U8(es/2), stride)
	n := Load(Param("n"), GP64())
	nB := GP64()
	MOVQ(n, nB)
	SHLQ(U8(2), nB)

	Label(name + "_t")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	op := Load(Param("out"), GP64())
	pp := GP64()
	MOVQ(pT, pp)
	gi := Load(Param("heads"), GP64())
	Label(name + "_g")
	pb := YMM()
	VBROADCASTSS(Mem{Base: pp}, pb)
	vp := GP64()
	MOVQ(vT, vp)
	d := Load(Param("hd"), GP64())
	Label(name + "_d")
	x := loadF32x8(Mem{Base: vp}, f16)
	VMULPS(pb, x, x)
	VADDPS(Mem{Base: op}, x, x)
	VMOVUPS(x, Mem{Base: op})
	ADDQ(U32(8*es), vp)
	ADDQ(U32(32), op)
	SUBQ(U32(8), d)
	JNZ(LabelRef(name + "_d"))
	ADDQ(nB, pp)
	DECQ(gi)
	JNZ(LabelRef(name + "_g"))

	prefetchRow(vT, stride, 128*es)
	ADDQ(stride, vT)
	ADDQ(U32(4), pT)
	DECQ(n)
	JMP(LabelRef(name + "_t"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// f32Const returns a YMM with every lane set to the float32 bits v.
func f32Const(v uint32) VecVirtual {
	g := GP32()
	MOVL(U32(v), g)
	y := YMM()
	VMOVD(g, y.AsX())
	VBROADCASTSS(y.AsX(), y)
	return y
}

// quantQ8Kernel emits func(src *float32, dst *byte, nb int): Q8_0
// quantization of nb blocks of 32, bit-identical to quantQ8_0 in Go:
// amax = max|x|, d = amax/127, id = 1/d (0 when that is infinite), d stored as F16
// (round to nearest even), q = round-half-away-from-zero(x·id). The rounding
// is exact: t = trunc(v), and t ± 1 when |v − t| ≥ 0.5 (v − t is exact in
// float32 for |v| < 2²³, and |v| ≤ 127 here).
func quantQ8Kernel() {
	const name = "quantQ8_0AVX2"
	TEXT(name, NOSPLIT, "func(src *float32, dst *byte, nb int)")
	Pragma("noescape")
	Doc(name + " quantizes nb blocks of 32 float32 to Q8_0, bit-identical to the Go quantizer.")
	src := Load(Param("src"), GP64())
	dst := Load(Param("dst"), GP64())
	nb := Load(Param("nb"), GP64())

	absMask, signMask := YMM(), YMM()
	VPCMPEQD(absMask, absMask, absMask)
	VPSLLD(U8(31), absMask, signMask)
	VPSRLD(U8(1), absMask, absMask)
	one := f32Const(0x3f800000)
	half := f32Const(0x3f000000)
	c127 := f32Const(0x42fe0000)
	perm := GLOBL("q8perm", RODATA|NOPTR)
	for i, v := range []uint32{0, 4, 1, 5, 2, 6, 3, 7} {
		DATA(4*i, U32(v))
	}
	pidx := YMM()
	VMOVDQU(perm, pidx)

	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	var x [4]VecVirtual
	for i := range x {
		x[i] = YMM()
		VMOVUPS(Mem{Base: src, Disp: 32 * i}, x[i])
	}
	m0, m1 := YMM(), YMM()
	VANDPS(absMask, x[0], m0)
	VANDPS(absMask, x[1], m1)
	VMAXPS(m1, m0, m0)
	VANDPS(absMask, x[2], m1)
	VMAXPS(m1, m0, m0)
	VANDPS(absMask, x[3], m1)
	VMAXPS(m1, m0, m0)
	dv, idv := q8Scale(m0, c127.AsX(), one.AsX())
	hb := XMM()
	VCVTPS2PH(U8(0), dv, hb)
	w := GP32()
	VPEXTRW(U8(0), hb, w)
	MOVW(w.As16(), Mem{Base: dst})
	id := YMM()
	VBROADCASTSS(idv, id)

	var q [4]VecVirtual
	for i := range x {
		v := x[i]
		VMULPS(id, v, v)
		tr := YMM()
		VROUNDPS(U8(3), v, tr) // trunc
		f := YMM()
		VSUBPS(tr, v, f)
		VANDPS(absMask, f, f)
		VCMPPS(U8(13), half, f, f) // |v−t| ≥ 0.5
		s := YMM()
		VANDPS(signMask, v, s)
		VORPS(one, s, s) // ±1
		VANDPS(f, s, s)
		VADDPS(s, tr, tr)
		q[i] = YMM()
		VCVTTPS2DQ(tr, q[i])
	}
	VPACKSSDW(q[1], q[0], q[0])
	VPACKSSDW(q[3], q[2], q[2])
	VPACKSSWB(q[2], q[0], q[0])
	VPERMD(q[0], pidx, q[0])
	VMOVDQU(q[0], Mem{Base: dst, Disp: 2})

	ADDQ(U32(128), src)
	ADDQ(U32(34), dst)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// floatRowKernel emits func(w *byte, stride, n int, a *float32, out *[4]float32):
// the dot products of 4 F16 or F32 weight rows (w, w+stride, … bytes) with
// one float32 activation row over n elements (a multiple of 16), each in the
// defined 16-lane order: two accumulators per row, activations loaded once
// for the 4 rows.
func floatRowKernel(f16 bool) {
	name := "dotF32x4AVX2"
	if f16 {
		name = "dotF16x4AVX2"
	}
	TEXT(name, NOSPLIT, "func(w *byte, stride, n int, a *float32, out *[4]float32)")
	Pragma("noescape")
	Doc(name + " computes the defined-order dot products of 4 weight rows with a (n a multiple of 16).")
	es := elemBytes(f16)
	r := rows{b0: Load(Param("w"), GP64()), stride: Load(Param("stride"), GP64())}
	r.s3 = GP64()
	LEAQ(Mem{Base: r.stride, Index: r.stride, Scale: 2}, r.s3)
	n := Load(Param("n"), GP64())
	ap := Load(Param("a"), GP64())
	var acc [4][2]VecVirtual
	for i := range acc {
		for h := range acc[i] {
			acc[i][h] = YMM()
			VXORPS(acc[i][h], acc[i][h], acc[i][h])
		}
	}
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	a0, a1 := YMM(), YMM()
	VMOVUPS(Mem{Base: ap}, a0)
	VMOVUPS(Mem{Base: ap, Disp: 32}, a1)
	for i := range acc {
		for h, av := range []VecVirtual{a0, a1} {
			x := loadF32x8(r.mem(i, 8*es*h), f16)
			VMULPS(av, x, x)
			VADDPS(x, acc[i][h], acc[i][h])
		}
	}
	ADDQ(U32(16*es), r.b0)
	ADDQ(U32(64), ap)
	SUBQ(U32(16), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	out := Load(Param("out"), GP64())
	for i := range acc {
		s := reduce16(acc[i][0], acc[i][1])
		VMOVSS(s, Mem{Base: out, Disp: 4 * i})
	}
	VZEROUPPER()
	RET()
}

// roundF16Kernel emits func(x *float32, n int) for n a multiple of 8:
// x[i] = F16ToF32(F32ToF16(x[i])), round to nearest even through F16C; a NaN
// becomes the quiet NaN with its sign and no payload, as F32ToF16 makes it.
func roundF16Kernel() {
	const name = "roundF16x8AVX2"
	TEXT(name, NOSPLIT, "func(x *float32, n int)")
	Pragma("noescape")
	Doc(name + " rounds n float32 values (a multiple of 8) to F16 precision in place.")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	signMask := YMM()
	VPCMPEQD(signMask, signMask, signMask)
	VPSLLD(U8(31), signMask, signMask)
	qnan := f32Const(0x7fc00000)
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	v := YMM()
	VMOVUPS(Mem{Base: x}, v)
	h := XMM()
	VCVTPS2PH(U8(0), v, h)
	r := YMM()
	VCVTPH2PS(h, r)
	signedQNaN(v, signMask, qnan, r)
	VMOVUPS(r, Mem{Base: x})
	ADDQ(U32(32), x)
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// floatBatchKernel emits func(w *byte, n int, a *float32, astride int, out *[6]float32):
// the defined-order dot products of one F16 or F32 weight row with 6
// activation rows (a, a+astride, … bytes) over n elements (a multiple of
// 16). Each weight vector is converted once for the 6 rows: the prefill
// shape, where the conversion would otherwise be repeated per row.
func floatBatchKernel(f16 bool) {
	name := "dotF32x1x6AVX2"
	if f16 {
		name = "dotF16x1x6AVX2"
	}
	TEXT(name, NOSPLIT, "func(w *byte, n int, a *float32, astride int, out *[6]float32)")
	Pragma("noescape")
	Doc(name + " computes the defined-order dot products of one weight row with 6 activation rows (n a multiple of 16).")
	es := elemBytes(f16)
	wp := Load(Param("w"), GP64())
	n := Load(Param("n"), GP64())
	r := rows{b0: Load(Param("a"), GP64()), stride: Load(Param("astride"), GP64())}
	r.s3 = GP64()
	LEAQ(Mem{Base: r.stride, Index: r.stride, Scale: 2}, r.s3)
	r.b4 = GP64()
	LEAQ(Mem{Base: r.b0, Index: r.s3, Scale: 1}, r.b4) // rows 3–5 (mem(4+k) = row 3+k)
	row := func(k, disp int) Mem {
		if k < 3 {
			return r.mem(k, disp)
		}
		return r.mem(k+1, disp)
	}
	var acc [6][2]VecVirtual
	for k := range acc {
		for h := range acc[k] {
			acc[k][h] = YMM()
			VXORPS(acc[k][h], acc[k][h], acc[k][h])
		}
	}
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	for h := range 2 {
		x := loadF32x8(Mem{Base: wp, Disp: 8 * es * h}, f16)
		for k := range acc {
			p := YMM()
			VMULPS(row(k, 32*h), x, p)
			VADDPS(p, acc[k][h], acc[k][h])
		}
	}
	ADDQ(U32(16*es), wp)
	ADDQ(U32(64), r.b0)
	ADDQ(U32(64), r.b4)
	SUBQ(U32(16), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	out := Load(Param("out"), GP64())
	for k := range acc {
		s := reduce16(acc[k][0], acc[k][1])
		VMOVSS(s, Mem{Base: out, Disp: 4 * k})
	}
	VZEROUPPER()
	RET()
}

// f32ToF16Kernel emits func(dst *uint16, src *float32, n int) for n a
// multiple of 8: dst[i] = kernels.F32ToF16(src[i]) through F16C (round to
// nearest even); a NaN first becomes the signed canonical quiet NaN, so its
// F16 is sign|0x7e00 as in Go.
func f32ToF16Kernel() {
	const name = "f32ToF16x8AVX2"
	TEXT(name, NOSPLIT, "func(dst *uint16, src *float32, n int)")
	Pragma("noescape")
	Doc(name + " converts n float32 values (a multiple of 8) to F16, as F32ToF16.")
	dst := Load(Param("dst"), GP64())
	src := Load(Param("src"), GP64())
	n := Load(Param("n"), GP64())
	signMask := YMM()
	VPCMPEQD(signMask, signMask, signMask)
	VPSLLD(U8(31), signMask, signMask)
	qnan := f32Const(0x7fc00000)
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	v := YMM()
	VMOVUPS(Mem{Base: src}, v)
	signedQNaN(v, signMask, qnan, v)
	h := XMM()
	VCVTPS2PH(U8(0), v, h)
	VMOVDQU(h, Mem{Base: dst})
	ADDQ(U32(16), dst)
	ADDQ(U32(32), src)
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// signedQNaN sets the lanes of dst where v is NaN to the quiet NaN with v's
// sign and no payload ((v & signMask) | qnan), leaving the others.
func signedQNaN(v, signMask VecVirtual, qnan Op, dst VecVirtual) {
	nan := YMM()
	VCMPPS(U8(3), v, v, nan) // unordered
	c := YMM()
	VANDPS(signMask, v, c)
	VORPS(qnan, c, c)
	VBLENDVPS(nan, c, dst, dst)
}

// accumKernel512 emits func(out, p *float32, v *T, stride, n int): for
// t = 0, 1, …, n−1 in order, out[d] += float32(p[t]·v[t·stride+d]) for
// d < 16·nv, with out held in nv ZMMs across the positions (the AVX2
// kernel reads and writes it back in memory for every position). Each
// element gets the same multiply and add in the same order, so the result
// is bit-identical to accumKernel's; the Go side calls it per head and per
// 16·nv columns. stride is in elements.
func accumKernel512(f16 bool, nv int) {
	vt, tn := "float32", "F32"
	if f16 {
		vt, tn = "uint16", "F16"
	}
	name := fmt.Sprintf("attnAccum%sx%dAVX512", tn, nv)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(out, p *float32, v *%s, stride, n int)", vt))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates n probability-weighted value rows into %d output columns, positions in order.", name, 16*nv))
	es := elemBytes(f16)
	op := Load(Param("out"), GP64())
	pp := Load(Param("p"), GP64())
	vp := Load(Param("v"), GP64())
	stride := Load(Param("stride"), GP64())
	SHLQ(U8(es/2), stride) // bytes
	n := Load(Param("n"), GP64())
	acc := make([]VecVirtual, nv)
	for k := range acc {
		acc[k] = ZMM()
		VMOVUPS(Mem{Base: op, Disp: 64 * k}, acc[k])
	}
	Label(name + "_t")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	pb := ZMM()
	VBROADCASTSS(Mem{Base: pp}, pb)
	for k := range acc {
		x := ZMM()
		if f16 {
			VCVTPH2PS(Mem{Base: vp, Disp: 32 * k}, x)
		} else {
			VMOVUPS(Mem{Base: vp, Disp: 64 * k}, x)
		}
		VMULPS(pb, x, x)
		VADDPS(x, acc[k], acc[k])
	}
	prefetchRow(vp, stride, 16*nv*es)
	ADDQ(stride, vp)
	ADDQ(U32(4), pp)
	DECQ(n)
	JMP(LabelRef(name + "_t"))
	Label(name + "_done")
	for k := range acc {
		VMOVUPS(acc[k], Mem{Base: op, Disp: 64 * k})
	}
	VZEROUPPER()
	RET()
}

// scoresKernel512 emits func(scores, q *float32, heads int, k *T, stride,
// n int): scoresKernel for head size 16·nc with AVX-512. Each key row's nc
// chunks are loaded (and converted) once for all heads, and each score is
// one ZMM of 16 lanes in the defined order (lane j: elements j, j+16, …,
// float32 products added to a zero start) folded by the defined tree, so
// it is bit-identical to scoresKernel's.
func scoresKernel512(f16 bool, nc int) {
	kt, tn := "float32", "F32"
	if f16 {
		kt, tn = "uint16", "F16"
	}
	name := fmt.Sprintf("attnScores%sx%dAVX512", tn, nc)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(scores, q *float32, heads int, k *%s, stride, n int)", kt))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes the scores of the query heads (head size %d) against n key rows.", name, 16*nc))
	es := elemBytes(f16)
	sT := Load(Param("scores"), GP64())
	kp := Load(Param("k"), GP64())
	stride := Load(Param("stride"), GP64())
	SHLQ(U8(es/2), stride) // bytes
	n := Load(Param("n"), GP64())
	nB := GP64()
	MOVQ(n, nB)
	SHLQ(U8(2), nB) // bytes between heads' score rows
	Label(name + "_t")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	kc := make([]VecVirtual, nc)
	for c := range kc {
		kc[c] = ZMM()
		if f16 {
			VCVTPH2PS(Mem{Base: kp, Disp: 32 * c}, kc[c])
		} else {
			VMOVUPS(Mem{Base: kp, Disp: 64 * c}, kc[c])
		}
	}
	prefetchRow(kp, stride, 16*nc*es)
	qq := Load(Param("q"), GP64())
	sp := GP64()
	MOVQ(sT, sp)
	gi := Load(Param("heads"), GP64())
	Label(name + "_g")
	acc := ZMM()
	VXORPS(acc, acc, acc)
	for c := range kc {
		x := ZMM()
		VMULPS(Mem{Base: qq, Disp: 64 * c}, kc[c], x)
		VADDPS(x, acc, acc)
	}
	h := YMM()
	VEXTRACTF64X4(U8(1), acc, h)
	VADDPS(h, acc.AsY(), h) // j + (j+8)
	x := XMM()
	VEXTRACTF128(U8(1), h, x)
	VADDPS(x, h.AsX(), x) // j + (j+4)
	t := XMM()
	VMOVHLPS(x, x, t)
	VADDPS(t, x, x) // j + (j+2)
	VMOVSHDUP(x, t)
	VADDSS(t, x, x) // 0 + 1
	VMOVSS(x, Mem{Base: sp})
	ADDQ(U32(64*nc), qq)
	ADDQ(nB, sp)
	DECQ(gi)
	JNZ(LabelRef(name + "_g"))
	ADDQ(stride, kp)
	ADDQ(U32(4), sT)
	DECQ(n)
	JMP(LabelRef(name + "_t"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// prefetchRowsKernel emits func(p *byte, stride, n, bytes int): PREFETCHT0
// of the first bytes (rounded up to lines) of n rows stride bytes apart.
func prefetchRowsKernel() {
	const name = "prefetchRowsT0"
	TEXT(name, NOSPLIT, "func(p *byte, stride, n, bytes int)")
	Pragma("noescape")
	Doc(name + " prefetches the first bytes of n rows, stride bytes apart, into L1.")
	p := Load(Param("p"), GP64())
	stride := Load(Param("stride"), GP64())
	n := Load(Param("n"), GP64())
	bytes := Load(Param("bytes"), GP64())
	Label(name + "_row")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	off := GP64()
	XORQ(off, off)
	Label(name + "_line")
	PREFETCHT0(Mem{Base: p, Index: off, Scale: 1})
	ADDQ(U32(64), off)
	CMPQ(off, bytes)
	JB(LabelRef(name + "_line"))
	ADDQ(stride, p)
	DECQ(n)
	JMP(LabelRef(name + "_row"))
	Label(name + "_done")
	RET()
}

// q8Scale reduces m, a Q8_0 block's |x| maxima in eight lanes, to the
// block's amax (in quantQ8_0AVX2's order: a NaN among them gives the same
// result in every kernel) and returns d = amax/127 and id = 1/d, 0 where
// 1/d is infinite (d = 0, or so small that 1/d overflows), in the low lanes
// of two XMMs, as quantQ8_0 computes them. c127 and one hold 127 and 1 in
// their low lanes.
func q8Scale(m VecVirtual, c127, one Op) (dv, idv VecVirtual) {
	h := XMM()
	VEXTRACTF128(U8(1), m, h)
	VMAXPS(h, m.AsX(), h)
	t := XMM()
	VMOVHLPS(h, h, t)
	VMAXPS(t, h, h)
	VMOVSHDUP(h, t)
	VMAXSS(t, h, h) // amax
	dv = XMM()
	VDIVSS(c127, h, dv) // d = amax/127
	idv = XMM()
	VDIVSS(dv, one, idv) // 1/d
	// idv·0 is 0 for a finite idv and NaN for ±Inf.
	z := XMM()
	VXORPS(z, z, z)
	fin := XMM()
	VMULSS(z, idv, fin)
	VCMPSS(U8(0), z, fin, fin) // idv·0 == 0
	VANDPS(fin, idv, idv)
	return dv, idv
}
