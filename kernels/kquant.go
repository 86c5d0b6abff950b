package kernels

import (
	"encoding/binary"
	"math"
)

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is
// below it quantizes to zeros.
const groupMaxEps = 1e-15

func sqrt32(f float32) float32 { return float32(math.Sqrt(float64(f))) }

// scaleMinK4 is ggml's get_scale_min_k4: the 6-bit scale and min of
// sub-block j (0..7) from the 12 packed bytes of a Q4_K block.
func scaleMinK4(j int, q *[12]byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	sc = q[j+4]&0xf | (q[j-4]>>6)<<4
	m = q[j+4]>>4 | (q[j]>>6)<<4
	return sc, m
}

// makeQKX2Quants is ggml's make_qkx2_quants with use_mad = false: it fits
// x ≈ scale·L - theMin with L in [0, nmax], searching nstep+1 candidate
// scales with weighted least squares. L and laux hold len(x) entries.
func makeQKX2Quants(nmax int32, x, weights []float32, L, laux []uint8, rmin, rdelta float32, nstep int) (scale, theMin float32) {
	n := len(x)
	weights, L, laux = weights[:n], L[:n], laux[:n]
	lo, hi := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < lo {
			lo = x[i]
		}
		if x[i] > hi {
			hi = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if lo > 0 {
		lo = 0
	}
	if hi == lo {
		clear(L)
		return 0, -lo
	}
	iscale := float32(nmax) / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i := range n {
		l := min(max(nearestInt(float32(iscale*(x[i]-lo))), 0), nmax)
		L[i] = uint8(l)
		diff := float32(scale*float32(l)) + lo - x[i]
		diff = float32(diff * diff)
		bestErr += float32(weights[i] * diff)
	}
	if nstep < 1 {
		return scale, -lo
	}
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + float32(rdelta*float32(is)) + float32(nmax)) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i := range n {
			l := min(max(nearestInt(float32(iscale*(x[i]-lo))), 0), nmax)
			laux[i] = uint8(l)
			w := weights[i]
			wl := float32(w * float32(l))
			sumL += wl
			sumL2 += float32(wl * float32(l))
			sumXL += float32(wl * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curErr float32
			for i := range n {
				diff := float32(thisScale*float32(laux[i])) + thisMin - x[i]
				diff = float32(diff * diff)
				curErr += float32(weights[i] * diff)
			}
			if curErr < bestErr {
				copy(L, laux)
				bestErr = curErr
				scale = thisScale
				lo = thisMin
			}
		}
	}
	return scale, -lo
}

// makeQXQuants is ggml's make_qx_quants with rmse_type = 1 and no
// importance weights: a symmetric fit x ≈ scale·(L-nmax), L in [0, 2·nmax).
func makeQXQuants(nmax int32, x []float32, L []int8) float32 {
	n := len(x)
	L = L[:n]
	var amax, maxv float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, maxv = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	fn := float32(nmax)
	iscale := -fn / maxv
	var sumlx, suml2 float32
	for i, v := range x {
		l := min(max(nearestInt(float32(iscale*v)), -nmax), nmax-1)
		L[i] = int8(l + nmax)
		w := float32(v * v)
		fl := float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := float32(scale * sumlx)
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fn + float32(0.1*float32(is))) / maxv
		sumlx, suml2 = 0, 0
		for _, v := range x {
			l := min(max(nearestInt(float32(iscale*v)), -nmax), nmax-1)
			w := float32(v * v)
			fl := float32(l)
			sumlx += float32(float32(w*v) * fl)
			suml2 += float32(float32(w*fl) * fl)
		}
		if suml2 > 0 && float32(sumlx*sumlx) > float32(best*suml2) {
			for i, v := range x {
				l := min(max(nearestInt(float32(iscale*v)), -nmax), nmax-1)
				L[i] = int8(l + nmax)
			}
			scale = sumlx / suml2
			best = float32(scale * sumlx)
		}
	}
	return scale
}

// quantQ4K is quantize_row_q4_K_ref. Block: f16 d, f16 dmin, 12 bytes of
// 6-bit scales and mins for 8 sub-blocks of 32, then 128 bytes where byte
// 32·c+l holds element 64·c+l (low nibble) and 64·c+32+l (high nibble).
func quantQ4K(src []float32, dst []byte) {
	nb := len(src) / QKK
	var (
		L       [QKK]uint8
		laux    [32]uint8
		weights [32]float32
		mins    [8]float32
		scales  [8]float32
	)
	for i := range nb {
		x := (*[QKK]float32)(src[i*QKK:])
		y := (*[q4KBytes]byte)(dst[i*q4KBytes:])
		var maxScale, maxMin float32
		for j := range 8 {
			sub := x[32*j : 32*j+32]
			var sumX2 float32
			for _, v := range sub {
				sumX2 += float32(v * v)
			}
			avX := sqrt32(sumX2 / 32)
			for l, v := range sub {
				weights[l] = avX + abs32(v)
			}
			scales[j], mins[j] = makeQKX2Quants(15, sub, weights[:], L[32*j:32*j+32], laux[:], -1, 0.1, 20)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}
		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		sc := (*[12]byte)(y[4:16])
		clear(sc[:])
		for j := range 8 {
			ls := min(63, uint8(nearestInt(float32(invScale*scales[j]))))
			lm := min(63, uint8(nearestInt(float32(invMin*mins[j]))))
			if j < 4 {
				sc[j] = ls
				sc[j+4] = lm
			} else {
				sc[j+4] = ls&0xf | (lm&0xf)<<4
				sc[j-4] |= (ls >> 4) << 6
				sc[j] |= (lm >> 4) << 6
			}
		}
		putF16(y[0:], maxScale/63)
		putF16(y[2:], maxMin/63)
		d0, m0 := f16At(y[0:]), f16At(y[2:])
		for j := range 8 {
			s, m := scaleMinK4(j, sc)
			d := float32(d0 * float32(s))
			if d == 0 {
				continue
			}
			dm := float32(m0 * float32(m))
			for ii := range 32 {
				l := nearestInt((x[32*j+ii] + dm) / d)
				L[32*j+ii] = uint8(min(max(l, 0), 15))
			}
		}
		q := y[16:]
		for c := range 4 {
			for l := range 32 {
				q[32*c+l] = L[64*c+l] | L[64*c+32+l]<<4
			}
		}
	}
}

func dequantQ4K(src []byte, dst []float32) {
	nb := len(dst) / QKK
	for i := range nb {
		x := (*[q4KBytes]byte)(src[i*q4KBytes:])
		y := (*[QKK]float32)(dst[i*QKK:])
		d, dmin := f16At(x[0:]), f16At(x[2:])
		sc := (*[12]byte)(x[4:16])
		for c := range 4 {
			s1, m1 := scaleMinK4(2*c, sc)
			s2, m2 := scaleMinK4(2*c+1, sc)
			d1, dm1 := float32(d*float32(s1)), float32(dmin*float32(m1))
			d2, dm2 := float32(d*float32(s2)), float32(dmin*float32(m2))
			q := (*[32]byte)(x[16+32*c:])
			out := (*[64]float32)(y[64*c:])
			for l := range 32 {
				out[l] = float32(d1*float32(q[l]&0xf)) - dm1
				out[32+l] = float32(d2*float32(q[l]>>4)) - dm2
			}
		}
	}
}

// quantQ6K is quantize_row_q6_K_ref. Block: 128 bytes ql (low 4 bits), 64
// bytes qh (high 2 bits), 16 int8 scales (one per 16 elements), f16 d.
// Within each half of 128 elements, ql[l] holds elements l and l+64 and
// ql[l+32] holds l+32 and l+96; qh[l] holds the high bits of l, l+32, l+64,
// l+96 at bit offsets 0, 2, 4, 6. Value = d·scale·(q-32).
func quantQ6K(src []float32, dst []byte) {
	nb := len(src) / QKK
	var (
		L      [QKK]int8
		scales [QKK / 16]float32
	)
	for i := range nb {
		x := (*[QKK]float32)(src[i*QKK:])
		y := (*[q6KBytes]byte)(dst[i*q6KBytes:])
		var maxScale, maxAbsScale float32
		for ib := range QKK / 16 {
			s := makeQXQuants(32, x[16*ib:16*ib+16], L[16*ib:16*ib+16])
			scales[ib] = s
			if a := abs32(s); a > maxAbsScale {
				maxAbsScale, maxScale = a, s
			}
		}
		if maxAbsScale < groupMaxEps {
			clear(y[:])
			continue
		}
		iscale := -128 / maxScale
		putF16(y[208:], 1/iscale)
		d0 := f16At(y[208:])
		for ib := range QKK / 16 {
			y[192+ib] = byte(int8(min(127, nearestInt(float32(iscale*scales[ib])))))
		}
		for j := range QKK / 16 {
			d := float32(d0 * float32(int8(y[192+j])))
			if d == 0 {
				continue
			}
			for ii := range 16 {
				l := nearestInt(x[16*j+ii] / d)
				L[16*j+ii] = int8(min(max(l, -32), 31) + 32)
			}
		}
		for h := range 2 {
			ql := y[64*h : 64*h+64]
			qh := y[128+32*h : 128+32*h+32]
			Lh := L[128*h : 128*h+128]
			for l := range 32 {
				q1, q2, q3, q4 := uint8(Lh[l]), uint8(Lh[l+32]), uint8(Lh[l+64]), uint8(Lh[l+96])
				ql[l] = q1&0xf | (q3&0xf)<<4
				ql[l+32] = q2&0xf | (q4&0xf)<<4
				qh[l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
			}
		}
	}
}

func dequantQ6K(src []byte, dst []float32) {
	nb := len(dst) / QKK
	for i := range nb {
		x := (*[q6KBytes]byte)(src[i*q6KBytes:])
		y := (*[QKK]float32)(dst[i*QKK:])
		d := f16At(x[208:])
		for h := range 2 {
			ql := (*[64]byte)(x[64*h:])
			qh := (*[32]byte)(x[128+32*h:])
			sc := (*[8]byte)(x[192+8*h:])
			out := (*[128]float32)(y[128*h:])
			for l := range 32 {
				is := l / 16
				q1 := int32(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
				q2 := int32(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int32(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				out[l] = float32(d*float32(int8(sc[is]))) * float32(q1)
				out[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				out[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				out[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
		}
	}
}

// quantQ8K is quantize_row_q8_K_ref: iscale = -127/max (max the signed value
// of largest magnitude), q = min(127, nearest_int(iscale·x)), d = 1/iscale,
// and bsums[j] the sum of the 16 quants of group j.
func quantQ8K(src []float32, dst []byte) {
	nb := len(src) / QKK
	for i := range nb {
		x := (*[QKK]float32)(src[i*QKK:])
		y := (*[q8KBytes]byte)(dst[i*q8KBytes:])
		var amax, maxv float32
		for _, v := range x {
			if a := abs32(v); a > amax {
				amax, maxv = a, v
			}
		}
		if amax == 0 {
			clear(y[:])
			continue
		}
		iscale := -127 / maxv
		qs := y[4 : 4+QKK]
		for j, v := range x {
			qs[j] = byte(int8(min(127, nearestInt(float32(iscale*v)))))
		}
		for j := range QKK / 16 {
			var s int32
			for _, q := range qs[16*j : 16*j+16] {
				s += int32(int8(q))
			}
			binary.LittleEndian.PutUint16(y[4+QKK+2*j:], uint16(int16(s)))
		}
		binary.LittleEndian.PutUint32(y[0:], math.Float32bits(1/iscale))
	}
}

func dequantQ8K(src []byte, dst []float32) {
	nb := len(dst) / QKK
	for i := range nb {
		x := (*[q8KBytes]byte)(src[i*q8KBytes:])
		y := (*[QKK]float32)(dst[i*QKK:])
		d := math.Float32frombits(binary.LittleEndian.Uint32(x[0:]))
		for j := range y {
			y[j] = d * float32(int8(x[4+j]))
		}
	}
}
