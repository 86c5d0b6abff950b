package model

import (
	"math"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/kvcache"
)

// attendTasks runs the attention tasks of thread slots [lo, hi). A task is
// one (row, kv head): the query heads that share that kv head (GQA) are
// served together, so each key and value row is read and converted once per
// task rather than once per query head. Tasks are split evenly over the
// slots; each slot owns a scratch buffer.
func (r *Runner) attendTasks(lo, hi int) {
	w, b, l := r.W, r.attnBatch, r.attnLayer
	threads := len(r.attnScratch)
	tasks := b.Len() * w.KVHeads
	for t := lo; t < hi; t++ {
		buf := r.attnScratch[t]
		for task := t * tasks / threads; task < (t+1)*tasks/threads; task++ {
			i, kvh := task/w.KVHeads, task%w.KVHeads
			r.attendGroup(l, b.Seqs[i], int(b.Pos[i]), i, kvh, buf)
		}
	}
}

// attendGroup computes, for batch row i, the attention of the query heads
// that share kv head kvh over positions [0, pos] of the row's sequence.
// With an F16 cache the queries and the probabilities are rounded to F16
// before they meet F16 keys and values, as ggml does when it multiplies an
// F32 operand with an F16 one. The group's query heads go through the
// kernels together, so each key and value row is read once per group. Each
// score is a kernels.DotF32 over the head dimension (a fixed lane order),
// each output element a sum in order over positions, so results do not
// depend on batching, threads or the SIMD level.
//
// The sequence's positions live in blocks; the kernels run once per block
// segment, in position order. Scores are independent dot products and the
// accumulation carries on from segment to segment in the same order, so the
// result is bit-identical to one pass over a contiguous cache. With more
// than one query head per group, a segment's scores are computed into (and
// its probabilities gathered from) a head-major staging area, because the
// kernels lay out heads × segment length.
func (r *Runner) attendGroup(l int, c *kvcache.Cache, pos, i, kvh int, buf []float32) {
	w := r.W
	hd, qd := w.HeadDim, w.QDim()
	group := w.Heads / w.KVHeads
	n := pos + 1
	scores := buf[:group*n]                       // group × n
	qs := buf[group*w.Ctx : group*w.Ctx+group*hd] // group × hd
	stage := buf[group*(w.Ctx+hd)+hd:][:group*w.Ctx]
	scale := float32(1 / math.Sqrt(float64(hd)))
	f16 := c.Type() == kernels.F16
	bs := c.BlockSize()
	segs := (n + bs - 1) / bs
	// The head's rows within a block: from col, stride apart (contiguous
	// when the cache keeps each head's positions together).
	ch := c.HeadDim()
	col := kvh * hd
	col, stride := (col/ch)*bs*ch+col%ch, ch

	q := r.q[i*qd+kvh*group*hd:][:group*hd]
	if f16 {
		copy(qs, q)
		kernels.RoundF16Row(qs)
		q = qs
	}
	// The next segment's rows (another cache block) are prefetched while
	// this one computes; the kernels prefetch within a block.
	prefetch := func(s int, v bool) {
		if s >= segs {
			return
		}
		m := min(bs, n-s*bs)
		switch {
		case f16 && v:
			kernels.PrefetchRows(c.V16(l, s)[col:], stride, m, hd)
		case f16:
			kernels.PrefetchRows(c.K16(l, s)[col:], stride, m, hd)
		case v:
			kernels.PrefetchRows(c.V32(l, s)[col:], stride, m, hd)
		default:
			kernels.PrefetchRows(c.K32(l, s)[col:], stride, m, hd)
		}
	}
	prefetch(0, false)
	for s := 0; s < segs; s++ {
		prefetch(s+1, false)
		if s == segs-1 {
			prefetch(0, true)
		}
		off := s * bs
		m := min(bs, n-off)
		dst := scores[off:] // one head: the segment's scores are in place
		if group > 1 && segs > 1 {
			dst = stage[:group*m]
		}
		if f16 {
			kernels.AttnScoresF16(dst, q, group, hd, c.K16(l, s)[col:], stride, m)
		} else {
			kernels.AttnScoresF32(dst, q, group, hd, c.K32(l, s)[col:], stride, m)
		}
		if group > 1 && segs > 1 {
			for g := 0; g < group; g++ {
				copy(scores[g*n+off:g*n+off+m], dst[g*m:(g+1)*m])
			}
		}
	}
	for t := range scores {
		scores[t] *= scale
	}
	for g := 0; g < group; g++ {
		p := scores[g*n : (g+1)*n]
		softmax(p)
		if f16 {
			kernels.RoundF16Row(p)
		}
	}
	out := r.att[i*qd+kvh*group*hd:][:group*hd]
	clear(out)
	for s := 0; s < segs; s++ {
		prefetch(s+1, true)
		off := s * bs
		m := min(bs, n-off)
		p := scores[off:]
		if group > 1 && segs > 1 {
			p = stage[:group*m]
			for g := 0; g < group; g++ {
				copy(p[g*m:(g+1)*m], scores[g*n+off:g*n+off+m])
			}
		}
		if f16 {
			kernels.AttnAccumF16(out, p, group, hd, c.V16(l, s)[col:], stride, m)
		} else {
			kernels.AttnAccumF32(out, p, group, hd, c.V32(l, s)[col:], stride, m)
		}
	}
}
