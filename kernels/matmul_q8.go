package kernels

// Packed Q8_0 activations: the MatMul fast path for weights whose vec-dot
// type is Q8_0 (Q8_0 and Q4_0 weights), in pure Go.
//
// Three activation rows share one int64 per element: lane k holds row 3g+k's
// int8 quant at bit 21·k. One 64-bit multiply by a weight quant then advances
// three dot products at once. A block's integer sum per row is at most
// 32·128·128 = 2¹⁹ in magnitude, so each lane's sum fits a signed 21-bit field
// and the three sums are recovered exactly from the 64-bit total. The integer
// per block and every float operation after it are the ones VecDot performs,
// in the same order, so outputs are bit-identical to the unpacked path.

const (
	laneBits  = 21
	laneShift = 64 - laneBits
	lanes     = 3
)

// unpack3 splits a sum of three 21-bit signed lanes.
func unpack3(acc int64) (s0, s1, s2 int32) {
	l0 := acc << laneShift >> laneShift
	rest := (acc - l0) >> laneBits
	l1 := rest << laneShift >> laneShift
	l2 := (rest - l1) >> laneBits
	return int32(l0), int32(l1), int32(l2)
}

// packQ8Groups quantizes activation rows of groups [lo, hi) to Q8_0 into
// s.act, records their block scales in s.ascale, and packs each group's
// quants into s.packed.
func (s *Scratch) packQ8Groups(lo, hi int) {
	cols, nb := s.m.Cols, s.m.Cols/QK
	for g := lo; g < hi; g++ {
		p := s.packed[g*cols : (g+1)*cols]
		clear(p)
		sc := s.ascale[g*lanes*nb : (g+1)*lanes*nb]
		clear(sc)
		for k := range lanes {
			r := g*lanes + k
			if r >= s.nrows {
				break
			}
			a := s.act[r*s.actRow : (r+1)*s.actRow]
			quantQ8_0(s.x[r*cols:(r+1)*cols], a)
			shift := uint(laneBits * k)
			for b := range nb {
				blk := (*[q8_0Bytes]byte)(a[b*q8_0Bytes:])
				sc[k*nb+b] = f16At(blk[:])
				pb := (*[QK]int64)(p[b*QK:])
				for j := range pb {
					pb[j] += int64(int8(blk[2+j])) << shift
				}
			}
		}
	}
}

// dotRowsPacked computes weight rows [lo, hi) against every packed group, in
// tiles of a few weight rows so a group's packed activations stay in L1.
func (s *Scratch) dotRowsPacked(lo, hi int) {
	const tile = 4
	m, cols, nb := s.m, s.m.Cols, s.m.Cols/QK
	ngroups := (s.nrows + lanes - 1) / lanes
	for i0 := lo; i0 < hi; i0 += tile {
		i1 := min(i0+tile, hi)
		for g := range ngroups {
			p := s.packed[g*cols : (g+1)*cols]
			sc := s.ascale[g*lanes*nb : (g+1)*lanes*nb]
			r0 := g * lanes
			for i := i0; i < i1; i++ {
				w := m.Data[i*s.wRow : (i+1)*s.wRow]
				var f0, f1, f2 float32
				if m.Type == Q4_0 {
					f0, f1, f2 = dotQ4_0x3(w, p, sc, nb)
				} else {
					f0, f1, f2 = dotQ8_0x3(w, p, sc, nb)
				}
				s.out[r0*m.Rows+i] = f0
				if r0+1 < s.nrows {
					s.out[(r0+1)*m.Rows+i] = f1
				}
				if r0+2 < s.nrows {
					s.out[(r0+2)*m.Rows+i] = f2
				}
			}
		}
	}
}

// dotQ8_0x3 is dotQ8_0 of one weight row against three packed activation
// rows; sc holds the rows' block scales (nb each).
func dotQ8_0x3(w []byte, p []int64, sc []float32, nb int) (f0, f1, f2 float32) {
	sc0, sc1, sc2 := sc[:nb], sc[nb:2*nb], sc[2*nb:3*nb]
	for b := range nb {
		x := (*[q8_0Bytes]byte)(w[b*q8_0Bytes:])
		pb := (*[QK]int64)(p[b*QK:])
		var a0, a1 int64
		for j := 0; j < QK; j += 2 {
			a0 += int64(int8(x[2+j])) * pb[j]
			a1 += int64(int8(x[3+j])) * pb[j+1]
		}
		s0, s1, s2 := unpack3(a0 + a1)
		dw := f16At(x[:])
		f0 = fma32(float32(s0), dw*sc0[b], f0)
		f1 = fma32(float32(s1), dw*sc1[b], f1)
		f2 = fma32(float32(s2), dw*sc2[b], f2)
	}
	return f0, f1, f2
}

// dotQ4_0x3 is dotQ4_0 of one weight row against three packed activation
// rows.
func dotQ4_0x3(w []byte, p []int64, sc []float32, nb int) (f0, f1, f2 float32) {
	sc0, sc1, sc2 := sc[:nb], sc[nb:2*nb], sc[2*nb:3*nb]
	for b := range nb {
		x := (*[q4_0Bytes]byte)(w[b*q4_0Bytes:])
		pb := (*[QK]int64)(p[b*QK:])
		var a0, a1 int64
		for j := range QK / 2 {
			q := x[2+j]
			a0 += (int64(q&0xf) - 8) * pb[j]
			a1 += (int64(q>>4) - 8) * pb[j+QK/2]
		}
		s0, s1, s2 := unpack3(a0 + a1)
		dw := f16At(x[:])
		f0 = fma32(float32(s0)*dw, sc0[b], f0)
		f1 = fma32(float32(s1)*dw, sc1[b], f1)
		f2 = fma32(float32(s2)*dw, sc2[b], f2)
	}
	return f0, f1, f2
}
