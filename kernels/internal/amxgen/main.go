// Command amxgen writes the AMX tile kernels (kernels/matmul_amx_amd64.s)
// and their Go declarations.
//
// The Go assembler has no AMX mnemonics, so the tile instructions are
// emitted as bytes by the small VEX encoder below (main_test.go checks its
// encodings against GNU as). Everything else is ordinary Go assembly.
// Run by go generate in kernels.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
)

// maxRows is the most activation rows of one kernel (an A tile's 16 rows).
const maxRows = 16

// x86 register numbers.
const (
	regAX  = 0
	regSI  = 6
	regDI  = 7
	regR8  = 8
	regR9  = 9
	regR10 = 10
	regR11 = 11
)

// vex3 is a three-byte VEX prefix for map 0F38, W0, L0: r, x and b are the
// high bits of ModRM.reg, SIB.index and SIB.base (or ModRM.rm), vvvv the
// extra register operand (15 when unused), pp the implied prefix (0 none,
// 1 66, 2 F3, 3 F2).
func vex3(r, x, b, vvvv, pp int) []byte {
	inv := func(bit int) byte { return byte(bit&1) ^ 1 }
	return []byte{0xc4, inv(r)<<7 | inv(x)<<6 | inv(b)<<5 | 0x02, byte(15-vvvv)<<3 | byte(pp)}
}

// tileMem encodes TILELOADD (pp F2) or TILESTORED (pp F3) of tile t at
// [base + disp], rows index bytes apart (the SIB index is the stride).
func tileMem(pp, t, base, index, disp int) []byte {
	out := vex3(0, index>>3, base>>3, 0, pp)
	out = append(out, 0x4b)
	mod := 0
	switch {
	case disp == 0 && base&7 != 5:
	case disp >= -128 && disp < 128:
		mod = 1
	default:
		mod = 2
	}
	out = append(out, byte(mod<<6|t<<3|4), byte((index&7)<<3|base&7))
	switch mod {
	case 1:
		out = append(out, byte(int8(disp)))
	case 2:
		out = append(out, byte(disp), byte(disp>>8), byte(disp>>16), byte(disp>>24))
	}
	return out
}

func tileLoad(t, base, index, disp int) []byte  { return tileMem(3, t, base, index, disp) }
func tileStore(t, base, index, disp int) []byte { return tileMem(2, t, base, index, disp) }

// tileZero encodes TILEZERO t.
func tileZero(t int) []byte { return append(vex3(0, 0, 0, 0, 3), 0x49, byte(0xc0|t<<3)) }

// tdpbssd encodes TDPBSSD c, a, b: c += a·b, signed bytes both.
func tdpbssd(c, a, b int) []byte { return append(vex3(0, 0, 0, b, 3), 0x5e, byte(0xc0|c<<3|a)) }

// ldtilecfg encodes LDTILECFG [base] (base not SP, BP, R12, R13).
func ldtilecfg(base int) []byte { return append(vex3(0, 0, base>>3, 0, 0), 0x49, byte(base&7)) }

// tileRelease encodes TILERELEASE.
func tileRelease() []byte { return append(vex3(0, 0, 0, 0, 0), 0x49, 0xc0) }

type gen struct{ b strings.Builder }

func (g *gen) f(format string, args ...any) { fmt.Fprintf(&g.b, format+"\n", args...) }

// bytes emits an instruction as bytes, with its Intel form as a comment.
func (g *gen) bytes(bs []byte, intel string, args ...any) {
	parts := make([]string, len(bs))
	for i, b := range bs {
		parts[i] = fmt.Sprintf("BYTE $0x%02x", b)
	}
	g.f("\t%s // %s", strings.Join(parts, "; "), fmt.Sprintf(intel, args...))
}

// The kernels take blocks in pairs: tmm0/tmm1 hold the pair's activation
// tiles (A), tmm2/tmm3 its weight tiles (B), and the int32 sums (C) go to
// tmm4/tmm5 for even pairs, tmm6/tmm7 for odd ones. The tile unit has no
// renaming: with one set of sums, a pair's products waited for the
// previous pair's stores, which waited for its products, all in series.
const pair = 2

// Ring of stored sums: four slots, pair q in slot q mod 4. A slot is two C
// tiles of up to 16 rows stored 128 bytes apart (2 KiB a tile), so its
// lines all share bit 6 of their address; slots 0 and 2 use the even lines
// of a 4 KiB span, 1 and 3 the odd ones. A pair is scaled lag iterations
// after the one that stored it, before that iteration's own stores; the
// stores that may still be draining ahead of its loads are then its own
// and those of the pair before it, whose lines differ in bit 6, so the
// loads never wait on them by 4K aliasing (a slot's stores cover all of
// 4 KiB, so every load would otherwise match one).
const (
	cRowStride  = 128
	cTileStride = maxRows * cRowStride
	ringBytes   = 2*pair*cTileStride + 64
)

// lag is how many iterations after a pair's sums are stored the vector
// units scale them: the tile unit stores a pair only after its products,
// and cannot hand a store's data to a load before it drains.
const lag = 1

// slotBase sets dst to the ring slot of pair (q mod 4), q in qreg, and R11
// to the C tiles' row stride.
func (g *gen) slotBase(dst, qreg string) {
	// slot s: ring + (s>>1)·4096 + (s&1)·64
	g.f("\tMOVQ %s, BX", qreg)
	g.f("\tANDQ $1, BX")
	g.f("\tSHLQ $6, BX")
	g.f("\tMOVQ %s, R11", qreg)
	g.f("\tANDQ $2, R11")
	g.f("\tSHLQ $11, R11")
	g.f("\tADDQ R11, BX")
	g.f("\tLEAQ (DX)(BX*1), %s", dst)
	g.f("\tMOVQ $%d, R11", cRowStride)
}

// dpBlock loads block j's activation and weight tiles (SI, R8 + 512j) and
// starts its product into tmm c.
func (g *gen) dpBlock(j, c int) {
	a, b := j%2, 2+j%2
	g.bytes(tileLoad(a, regSI, regR9, 0), "TILELOADD tmm%d, [SI+R9]", a)
	g.bytes(tileLoad(b, regR8, regR9, 512*j), "TILELOADD tmm%d, [R8+R9+%d]", b, 512*j)
	g.bytes(tileZero(c), "TILEZERO tmm%d", c)
	g.bytes(tdpbssd(c, a, b), "TDPBSSD tmm%d, tmm%d, tmm%d", c, a, b)
	g.f("\tADDQ DI, SI")
}

// scaleBlock scales one block's sums (C tile at disp(base), rows 128 bytes
// apart) into the accumulators Z0..Z(m-1) exactly as the VNNI kernels do:
// acc += float32(sumi)·float32(dw·da), fused. R12 points at the weight
// tile's scales (F16, lane order) at disp ws, R13 at the block of the
// activation rows (raBlock bytes apart, the float32 scale at 32).
func (g *gen) scaleBlock(m int, base string, disp, ws, set int) {
	dw := 16 + set
	g.f("\tVCVTPH2PS %d(R12), Z%d", ws, dw)
	for r := range m {
		k := r % 7
		d, s := 18+2*k, 19+2*k
		g.f("\tVMULPS.BCST %d(R13), Z%d, Z%d", 64*r+32, dw, d)
		g.f("\tVCVTDQ2PS %d(%s), Z%d", disp+cRowStride*r, base, s)
		g.f("\tVFMADD231PS Z%d, Z%d, Z%d", d, s, r)
	}
	g.f("\tADDQ DI, R13")
}

// storePair stores the sums of the pair in C set (q mod 2), q in CX−1, to
// its ring slot.
func (g *gen) storePair(l func(string) string) {
	g.f("\tLEAQ -1(CX), R10")
	g.f("\tMOVQ R10, R14")
	g.slotBase("R10", "R10")
	g.f("\tTESTQ $1, R14")
	g.f("\tJNZ %s", l("storeodd"))
	for j := range pair {
		g.bytes(tileStore(4+j, regR10, regR11, j*cTileStride), "TILESTORED [R10+R11+%d], tmm%d", j*cTileStride, 4+j)
	}
	g.f("\tJMP %s", l("stored"))
	g.f("%s:", l("storeodd"))
	for j := range pair {
		g.bytes(tileStore(6+j, regR10, regR11, j*cTileStride), "TILESTORED [R10+R11+%d], tmm%d", j*cTileStride, 6+j)
	}
	g.f("%s:", l("stored"))
}

// Stack slots of the kernels' locals (off SP).
const (
	locAMXLeft = 0  // pairs the tile unit has left in its group
	locEpiLeft = 8  // pairs the scaling has left in its group
	locDeltaA  = 16 // from past a group's last block to the next group's first
	locOut     = 24 // where the scaling's group goes
	locGroups  = 32 // groups the scaling has left, counting its own
	locPF      = 40 // the next weight tile's bytes still to prefetch
	frameBytes = 48
)

// pfLines is how many lines of the next weight tile the kernels prefetch
// a pair: a tile is 8.5 lines a block, so a call with eight groups covers
// it twice over; with fewer, part of it.
const pfLines = 4

// kernel emits tileQ8_0x<m>AMX for groups of m activation rows, one after
// another in a's rows (group g's row r at row g·m + r), against one weight
// tile; with more than one group nb must be even. Pairs of blocks run in
// one stream across the groups, so the pipeline fills and drains once per
// call: iteration i of the loop scales pair i−1−lag (when there is one)
// from its ring slot, starts pair i's products, then stores pair i−1's
// sums. The scaling writes a group's results out when it finishes the
// group's last pair, and the last group's after the loop, once an odd last
// block (only with one group) has gone alone.
func (g *gen) kernel(m int) {
	name := fmt.Sprintf("tileQ8_0x%dAMX", m)
	l := func(s string) string { return name + "_" + s }
	g.f("// func %s(cfg, wq, ws *byte, nb int, a *byte, astep int, out *float32, ostride int, ring *byte, groups int, pf *byte)", name)
	g.f("TEXT ·%s(SB), NOSPLIT, $%d-88", name, frameBytes)
	g.f("\tMOVQ cfg+0(FP), AX")
	g.f("\tMOVQ wq+8(FP), R8")
	g.f("\tMOVQ ws+16(FP), R12")
	g.f("\tMOVQ nb+24(FP), R15")
	g.f("\tMOVQ a+32(FP), SI")
	g.f("\tMOVQ astep+40(FP), DI")
	g.f("\tMOVQ ring+64(FP), DX")
	g.f("\tMOVQ SI, R13")
	g.f("\tMOVQ $64, R9")
	g.bytes(ldtilecfg(regAX), "LDTILECFG [AX]")
	for r := range m {
		g.f("\tVPXORD Z%d, Z%d, Z%d", r, r, r)
	}
	// Locals: deltaA = m·64 − nb·astep; out; groups; both counters = pairs.
	g.f("\tMOVQ R15, BX")
	g.f("\tIMULQ DI, BX")
	g.f("\tNEGQ BX")
	g.f("\tADDQ $%d, BX", m*64)
	g.f("\tMOVQ BX, %d(SP)", locDeltaA)
	g.f("\tMOVQ out+48(FP), BX")
	g.f("\tMOVQ BX, %d(SP)", locOut)
	g.f("\tMOVQ groups+72(FP), BX")
	g.f("\tMOVQ BX, %d(SP)", locGroups)
	g.f("\tMOVQ pf+80(FP), BX")
	g.f("\tMOVQ BX, %d(SP)", locPF)
	g.f("\tMOVQ R15, AX")
	g.f("\tSHRQ $1, AX") // pairs a group
	g.f("\tMOVQ AX, %d(SP)", locAMXLeft)
	g.f("\tMOVQ AX, %d(SP)", locEpiLeft)
	g.f("\tIMULQ groups+72(FP), AX") // pairs in all
	g.f("\tXORQ CX, CX")             // i
	g.f("\tTESTQ AX, AX")
	g.f("\tJZ %s", l("tail"))
	g.f("%s:", l("loop"))
	// Scale pair i−1−lag.
	g.f("\tCMPQ CX, $%d", 1+lag)
	g.f("\tJLT %s", l("noscale"))
	g.f("\tLEAQ -%d(CX), R14", 1+lag)
	g.slotBase("R14", "R14")
	for j := range pair {
		g.scaleBlock(m, "R14", j*cTileStride, 32*j, j%2)
	}
	g.f("\tADDQ $%d, R12", 32*pair)
	g.f("\tDECQ %d(SP)", locEpiLeft)
	g.f("\tJNZ %s", l("noscale"))
	// The scaling finished a group: unless it is the last, write it out
	// and start the next.
	g.f("\tCMPQ %d(SP), $1", locGroups)
	g.f("\tJEQ %s", l("noscale"))
	g.f("\tDECQ %d(SP)", locGroups)
	g.f("\tMOVQ %d(SP), R14", locOut)
	g.storeAccs(m, "R14", true)
	g.f("\tMOVQ R14, %d(SP)", locOut)
	g.nextGroup("R13", "R12", 5, locEpiLeft)
	g.f("%s:", l("noscale"))
	// Start pair i.
	g.f("\tCMPQ CX, AX")
	g.f("\tJGE %s", l("nodp"))
	g.f("\tTESTQ $1, CX")
	g.f("\tJNZ %s", l("dpodd"))
	for j := range pair {
		g.dpBlock(j, 4+j)
	}
	g.f("\tJMP %s", l("dpdone"))
	g.f("%s:", l("dpodd"))
	for j := range pair {
		g.dpBlock(j, 6+j)
	}
	g.f("%s:", l("dpdone"))
	// The next weight tile streams into L2 meanwhile, pfLines lines a pair.
	g.f("\tMOVQ %d(SP), BX", locPF)
	for k := range pfLines {
		g.f("\tPREFETCHT1 %d(BX)", 64*k)
	}
	g.f("\tADDQ $%d, BX", 64*pfLines)
	g.f("\tMOVQ BX, %d(SP)", locPF)
	g.f("\tADDQ $%d, R8", 512*pair)
	g.f("\tDECQ %d(SP)", locAMXLeft)
	g.f("\tJNZ %s", l("nodp"))
	// The tile unit finished a group: unless it was the last, back to the
	// tile's first block, on to the next group's rows.
	g.f("\tLEAQ 1(CX), BX")
	g.f("\tCMPQ BX, AX")
	g.f("\tJGE %s", l("nodp"))
	g.nextGroup("SI", "R8", 9, locAMXLeft)
	g.f("%s:", l("nodp"))
	// Store pair i−1.
	g.f("\tTESTQ CX, CX")
	g.f("\tJZ %s", l("nostore"))
	g.f("\tCMPQ CX, AX")
	g.f("\tJGT %s", l("nostore"))
	g.storePair(l)
	g.f("%s:", l("nostore"))
	g.f("\tINCQ CX")
	g.f("\tLEAQ %d(AX), BX", 1+lag)
	g.f("\tCMPQ CX, BX")
	g.f("\tJLT %s", l("loop"))
	// An odd last block (one group only), alone, through ring slot 0.
	g.f("%s:", l("tail"))
	g.f("\tTESTQ $1, R15")
	g.f("\tJZ %s", l("done"))
	g.f("\tMOVQ DX, R10")
	g.f("\tMOVQ $%d, R11", cRowStride)
	g.dpBlock(0, 4)
	g.bytes(tileStore(4, regR10, regR11, 0), "TILESTORED [R10+R11], tmm4")
	g.scaleBlock(m, "R10", 0, 0, 0)
	g.f("%s:", l("done"))
	g.bytes(tileRelease(), "TILERELEASE")
	g.f("\tMOVQ %d(SP), R14", locOut)
	g.storeAccs(m, "R14", false)
	g.f("\tVZEROUPPER")
	g.f("\tRET")
	g.f("")
}

// nextGroup moves one side of the pipeline (the tile unit's or the
// scaling's) from past a group's last block to the next group's first: its
// activation pointer act on by deltaA, its weight pointer w back by nb
// blocks of 1<<shift bytes, its pair counter (stack slot left) to a
// group's pairs.
func (g *gen) nextGroup(act, w string, shift, left int) {
	g.f("\tADDQ %d(SP), %s", locDeltaA, act)
	g.f("\tMOVQ R15, BX")
	g.f("\tSHLQ $%d, BX", shift)
	g.f("\tSUBQ BX, %s", w)
	g.f("\tMOVQ R15, BX")
	g.f("\tSHRQ $1, BX")
	g.f("\tMOVQ BX, %d(SP)", left)
}

// storeAccs writes the accumulators Z0..Z(m-1) to the rows at ptr
// (ostride bytes apart, from the frame), leaving ptr past the last row, and
// zeroes them when zero is set.
func (g *gen) storeAccs(m int, ptr string, zero bool) {
	g.f("\tMOVQ ostride+56(FP), BX")
	for r := range m {
		// The sums' columns are the packed tile's lanes (rows 0–3, 8–11,
		// 4–7, 12–15): swap the middle 128-bit lanes back.
		g.f("\tVSHUFI64X2 $0xd8, Z%d, Z%d, Z%d", r, r, r)
		g.f("\tVMOVUPS Z%d, (%s)", r, ptr)
		g.f("\tADDQ BX, %s", ptr)
		if zero {
			g.f("\tVPXORD Z%d, Z%d, Z%d", r, r, r)
		}
	}
}

// signKernel emits signQuants.
func (g *gen) signKernel() {
	g.f("// func signQuants(dst, src *byte, n int)")
	g.f("TEXT ·signQuants(SB), NOSPLIT, $0-24")
	g.f("\tMOVQ dst+0(FP), DI")
	g.f("\tMOVQ src+8(FP), SI")
	g.f("\tMOVQ n+16(FP), CX")
	g.f("\tMOVL $0x80808080, AX")
	g.f("\tVPBROADCASTD AX, Z31")
	g.f("\tTESTQ CX, CX")
	g.f("\tJZ signQuants_done")
	g.f("signQuants_loop:")
	for k := range 4 {
		g.f("\tVPXORD %d(SI), Z31, Z%d", 64*k, k)
	}
	for k := range 4 {
		g.f("\tVMOVDQU64 Z%d, %d(DI)", k, 64*k)
	}
	g.f("\tADDQ $256, SI")
	g.f("\tADDQ $256, DI")
	g.f("\tSUBQ $256, CX")
	g.f("\tJNZ signQuants_loop")
	g.f("signQuants_done:")
	g.f("\tVZEROUPPER")
	g.f("\tRET")
	g.f("")
}

func main() {
	out := flag.String("out", "", "assembly file to write")
	stubs := flag.String("stubs", "", "Go declarations file to write")
	flag.Parse()
	if *out == "" || *stubs == "" {
		log.Fatal("amxgen: -out and -stubs are required")
	}
	asm, decls := generate()
	if err := os.WriteFile(*out, asm, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*stubs, decls, 0o644); err != nil {
		log.Fatal(err)
	}
}

// generate returns the assembly file and the Go declarations file.
func generate() (asm, decls []byte) {
	var g gen
	g.f("// Code generated by amxgen. DO NOT EDIT.")
	g.f("")
	g.f("//go:build amd64 && !purego")
	g.f("")
	g.f("#include \"textflag.h\"")
	g.f("")
	for m := 1; m <= maxRows; m++ {
		g.kernel(m)
	}
	g.signKernel()
	var s gen
	s.f("// Code generated by amxgen. DO NOT EDIT.")
	s.f("")
	s.f("//go:build amd64 && !purego")
	s.f("")
	s.f("package kernels")
	s.f("")
	s.f("// amxRingBytes is the bytes of the AMX kernels' ring of stored sums.")
	s.f("const amxRingBytes = %d", ringBytes)
	s.f("")
	for m := 1; m <= maxRows; m++ {
		name := fmt.Sprintf("tileQ8_0x%dAMX", m)
		s.f("// %s computes a 16-row Q8_0 weight tile (packed, quants signed) against groups of %d packed activation rows with AMX, bit-identical to the Go dot.", name, m)
		s.f("//")
		s.f("//go:noescape")
		s.f("func %s(cfg, wq, ws *byte, nb int, a *byte, astep int, out *float32, ostride int, ring *byte, groups int, pf *byte)", name)
		s.f("")
	}
	s.f("// signQuants writes the n bytes at src XOR 0x80 to dst (n a multiple of 256): a")
	s.f("// packed tile's quants, offset to unsigned for VPDPBUSD, back to signed for TDPBSSD.")
	s.f("//")
	s.f("//go:noescape")
	s.f("func signQuants(dst, src *byte, n int)")
	s.f("")
	s.f("// amxKernels[m-1] is the AMX tile kernel for m activation rows.")
	s.f("var amxKernels = [%d]func(cfg, wq, ws *byte, nb int, a *byte, astep int, out *float32, ostride int, ring *byte, groups int, pf *byte){", maxRows)
	for m := 1; m <= maxRows; m++ {
		s.f("\ttileQ8_0x%dAMX,", m)
	}
	s.f("}")
	return []byte(g.b.String()), []byte(s.b.String())
}
