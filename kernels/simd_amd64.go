//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// detectSIMD returns the best kernel level this CPU (and OS) supports.
func detectSIMD() simdLevel {
	x := cpu.X86
	if !x.HasAVX2 || !x.HasF16C || !x.HasFMA {
		return simdGo
	}
	if x.HasAVX512F && x.HasAVX512BW && x.HasAVX512DQ && x.HasAVX512VL && x.HasAVX512VNNI {
		return simdAVX512VNNI
	}
	return simdAVX2
}

func rowDotQ8_0x8(q4 bool, w []byte, stride, nb int, a []byte, out *[8]float32) {
	if q4 {
		dotQ4_0x8AVX2(&w[0], stride, nb, &a[0], out)
	} else {
		dotQ8_0x8AVX2(&w[0], stride, nb, &a[0], out)
	}
}

// useGFNI selects the Q4_0 VNNI row kernel that splits nibbles with
// VGF2P8AFFINEQB (tests clear it to cover the other).
var useGFNI = cpu.X86.HasAVX512GFNI

// useFMA gates the kernels that need FMA3 beside AVX2 (expSumF64AVX2).
var useFMA = cpu.X86.HasFMA

func rowDotQ8_0x16(q4 bool, w []byte, stride, nb int, a []byte, out *[16]float32) {
	switch {
	case q4 && useGFNI:
		dotQ4_0x16GFNI(&w[0], stride, nb, &a[0], out)
	case q4:
		dotQ4_0x16VNNI(&w[0], stride, nb, &a[0], out)
	default:
		dotQ8_0x16VNNI(&w[0], stride, nb, &a[0], out)
	}
}

// rowMultiKernels[k][na-1] is the multi-activation-row VNNI row kernel for
// na activation rows: k 0 Q8_0, 1 Q4_0, 2 Q4_0 with GFNI.
var rowMultiKernels = [3][maxRowActs]func(w *byte, stride, nb int, a *byte, astep int, out *float32, ostride int){
	{dotQ8_0x16x1VNNI, dotQ8_0x16x2VNNI, dotQ8_0x16x3VNNI, dotQ8_0x16x4VNNI, dotQ8_0x16x5VNNI, dotQ8_0x16x6VNNI, dotQ8_0x16x7VNNI, dotQ8_0x16x8VNNI, dotQ8_0x16x9VNNI, dotQ8_0x16x10VNNI, dotQ8_0x16x11VNNI, dotQ8_0x16x12VNNI, dotQ8_0x16x13VNNI, dotQ8_0x16x14VNNI, dotQ8_0x16x15VNNI, dotQ8_0x16x16VNNI, dotQ8_0x16x17VNNI, dotQ8_0x16x18VNNI},
	{dotQ4_0x16x1VNNI, dotQ4_0x16x2VNNI, dotQ4_0x16x3VNNI, dotQ4_0x16x4VNNI, dotQ4_0x16x5VNNI, dotQ4_0x16x6VNNI, dotQ4_0x16x7VNNI, dotQ4_0x16x8VNNI, dotQ4_0x16x9VNNI, dotQ4_0x16x10VNNI, dotQ4_0x16x11VNNI, dotQ4_0x16x12VNNI, dotQ4_0x16x13VNNI, dotQ4_0x16x14VNNI, dotQ4_0x16x15VNNI, dotQ4_0x16x16VNNI, dotQ4_0x16x17VNNI, dotQ4_0x16x18VNNI},
	{dotQ4_0x16x1GFNI, dotQ4_0x16x2GFNI, dotQ4_0x16x3GFNI, dotQ4_0x16x4GFNI, dotQ4_0x16x5GFNI, dotQ4_0x16x6GFNI, dotQ4_0x16x7GFNI, dotQ4_0x16x8GFNI, dotQ4_0x16x9GFNI, dotQ4_0x16x10GFNI, dotQ4_0x16x11GFNI, dotQ4_0x16x12GFNI, dotQ4_0x16x13GFNI, dotQ4_0x16x14GFNI, dotQ4_0x16x15GFNI, dotQ4_0x16x16GFNI, dotQ4_0x16x17GFNI, dotQ4_0x16x18GFNI},
}

// rowDotQ8_0x16xN computes 16 weight rows against na (1..maxRowActs) packed
// activation rows whose blocks are astep bytes apart (row r at a[r·raBlock:]);
// weight row i, activation row r goes to out[r·ostride+i].
func rowDotQ8_0x16xN(q4 bool, na int, w []byte, stride, nb int, a []byte, astep int, out []float32, ostride int) {
	k := 0
	if q4 {
		k = 1
		if useGFNI {
			k = 2
		}
	}
	_ = out[(na-1)*ostride+rowTile16-1]
	rowMultiKernels[k][na-1](&w[0], stride, nb, &a[0], astep, &out[0], 4*ostride)
}

// rowTiledKernels[q4][na-1] is the tiled multi-row VNNI kernel for na
// activation rows against a tile packed by packTile16.
var rowTiledKernels = [2][maxRowActs]func(wq, ws *byte, nb int, a *byte, astep int, out *float32, ostride int){
	{tileQ8_0x16x1VNNI, tileQ8_0x16x2VNNI, tileQ8_0x16x3VNNI, tileQ8_0x16x4VNNI, tileQ8_0x16x5VNNI, tileQ8_0x16x6VNNI, tileQ8_0x16x7VNNI, tileQ8_0x16x8VNNI, tileQ8_0x16x9VNNI, tileQ8_0x16x10VNNI, tileQ8_0x16x11VNNI, tileQ8_0x16x12VNNI, tileQ8_0x16x13VNNI, tileQ8_0x16x14VNNI, tileQ8_0x16x15VNNI, tileQ8_0x16x16VNNI, tileQ8_0x16x17VNNI, tileQ8_0x16x18VNNI},
	{tileQ4_0x16x1VNNI, tileQ4_0x16x2VNNI, tileQ4_0x16x3VNNI, tileQ4_0x16x4VNNI, tileQ4_0x16x5VNNI, tileQ4_0x16x6VNNI, tileQ4_0x16x7VNNI, tileQ4_0x16x8VNNI, tileQ4_0x16x9VNNI, tileQ4_0x16x10VNNI, tileQ4_0x16x11VNNI, tileQ4_0x16x12VNNI, tileQ4_0x16x13VNNI, tileQ4_0x16x14VNNI, tileQ4_0x16x15VNNI, tileQ4_0x16x16VNNI, tileQ4_0x16x17VNNI, tileQ4_0x16x18VNNI},
}

// packTile16 packs the 16 weight rows at w (stride bytes apart, nb blocks)
// into ws (nb·32 bytes) and wq (nb·512 bytes) for rowDotTiled16xN.
func packTile16(q4 bool, w []byte, stride, nb int, ws, wq []byte) {
	_ = w[15*stride+nb*blockBytes(q4)-1]
	_ = ws[nb*32-1]
	_ = wq[nb*512-1]
	switch {
	case q4 && useGFNI:
		packTileQ4_0GFNI(&w[0], stride, nb, &ws[0], &wq[0])
	case q4:
		packTileQ4_0VNNI(&w[0], stride, nb, &ws[0], &wq[0])
	default:
		packTileQ8_0VNNI(&w[0], stride, nb, &ws[0], &wq[0])
	}
}

// rowDotTiled16xN is rowDotQ8_0x16xN for a tile packed by packTile16.
func rowDotTiled16xN(q4 bool, na int, ws, wq []byte, nb int, a []byte, astep int, out []float32, ostride int) {
	k := 0
	if q4 {
		k = 1
	}
	_ = out[(na-1)*ostride+rowTile16-1]
	_ = ws[nb*32-1]
	_ = wq[nb*512-1]
	rowTiledKernels[k][na-1](&wq[0], &ws[0], nb, &a[0], astep, &out[0], 4*ostride)
}

// float512Kernels[f16][na-1] is the AVX-512 float tile kernel for 4 weight
// rows × na activation rows.
var float512Kernels = [2][floatActs512]func(w *byte, stride, n int, a *float32, astride int, out *float32, ostride int){
	{dotF32x4x1AVX512, dotF32x4x2AVX512, dotF32x4x3AVX512, dotF32x4x4AVX512, dotF32x4x5AVX512, dotF32x4x6AVX512},
	{dotF16x4x1AVX512, dotF16x4x2AVX512, dotF16x4x3AVX512, dotF16x4x4AVX512, dotF16x4x5AVX512, dotF16x4x6AVX512},
}

// dotFloat4xN computes the defined-order dot products (first n columns, a
// multiple of 16) of 4 weight rows (stride bytes apart) with na activation
// rows (astride elements apart) into out[k·ostride+i].
func dotFloat4xN(f16 bool, na int, w []byte, stride, n int, a []float32, astride int, out []float32, ostride int) {
	_ = a[(na-1)*astride+n-1]
	_ = out[(na-1)*ostride+3]
	k, es := 0, 4
	if f16 {
		k, es = 1, 2
	}
	_ = w[3*stride+n*es-1]
	float512Kernels[k][na-1](&w[0], stride, n, &a[0], 4*astride, &out[0], 4*ostride)
}

// dotFloat8x1 computes the defined-order dot products (first n columns) of 8
// weight rows with one activation row into out[0:8].
func dotFloat8x1(f16 bool, w []byte, stride, n int, a []float32, out []float32) {
	_ = a[n-1]
	_ = out[7]
	if f16 {
		_ = w[7*stride+2*n-1]
		dotF16x8x1AVX512(&w[0], stride, n, &a[0], 0, &out[0], 0)
	} else {
		_ = w[7*stride+4*n-1]
		dotF32x8x1AVX512(&w[0], stride, n, &a[0], 0, &out[0], 0)
	}
}

// peakAccs is the generator's accumulator count in the peak loops.
const peakAccs = 10

func peakLoop(kind PeakKind, iters int) (int64, bool) {
	if iters <= 0 {
		return 0, true
	}
	switch {
	case kind == PeakInt8 && cpuSIMD >= simdAVX512VNNI:
		peakVNNI512(iters)
		return int64(iters) * peakAccs * 64 * 2, true
	case kind == PeakFP32 && cpuSIMD >= simdAVX512VNNI:
		peakFMA512(iters)
		return int64(iters) * peakAccs * 16 * 2, true
	case kind == PeakFP32 && cpuSIMD >= simdAVX2 && cpu.X86.HasFMA:
		peakFMA256(iters)
		return int64(iters) * peakAccs * 8 * 2, true
	}
	return 0, false
}

// packRowSIMD is packRowVNNI's body: the assembly (the VNNI row kernels that
// read the packed rows need AVX-512 anyway) or, below that level, Go.
func quantPackRowSIMD(x []float32, nb int, dst []byte, step int) {
	if useSIMD >= simdAVX512VNNI {
		quantPackQ8_0AVX512(&x[0], nb, &dst[0], step)
		return
	}
	quantPackRowGo(x, dst, step)
}

func packRowSIMD(a []byte, nb int, dst []byte, step int) {
	if useSIMD >= simdAVX512VNNI {
		packRowVNNIAVX512(&a[0], nb, &dst[0], step)
		return
	}
	packRowVNNIGo(a[:nb*q8_0Bytes], dst, step)
}
