package model

import (
	"math"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/kvcache"
)

// attnRun is a run of batch rows of one sequence at consecutive positions
// (a prefill chunk, cut into runs of at most Runner.attnRowsMax rows).
type attnRun struct{ i0, n int }

// planAttnRuns splits the batch's rows into runs.
func (r *Runner) planAttnRuns(b *Batch) {
	r.attnRuns = r.attnRuns[:0]
	for i, n := 0, b.Len(); i < n; {
		j := i + 1
		for j < n && j-i < r.attnRowsMax && b.Seqs[j] == b.Seqs[i] && b.Pos[j] == b.Pos[j-1]+1 {
			j++
		}
		r.attnRuns = append(r.attnRuns, attnRun{i, j - i})
		i = j
	}
}

// attendTasks runs the attention tasks of thread slots [lo, hi). A task is
// one (run of rows, kv head): the query heads that share that kv head
// (GQA), of every row of the run, are served together, so each key and
// value row is read and converted once per task rather than once per query
// head and row. Tasks are split evenly over the slots; each slot owns a
// scratch buffer.
func (r *Runner) attendTasks(lo, hi int) {
	w, b, l := r.W, r.attnBatch, r.attnLayer
	threads := len(r.attnScratch)
	tasks := len(r.attnRuns) * w.KVHeads
	for t := lo; t < hi; t++ {
		buf := r.attnScratch[t]
		for task := t * tasks / threads; task < (t+1)*tasks/threads; task++ {
			run, kvh := r.attnRuns[task/w.KVHeads], task%w.KVHeads
			if run.n == 1 {
				r.attendGroup(l, b.Seqs[run.i0], int(b.Pos[run.i0]), run.i0, kvh, buf)
			} else {
				r.attendRun(l, b, run, kvh, buf)
			}
		}
	}
}

// attendRun is attendGroup for the rows of a run together: its R rows'
// query heads for kv head kvh go through the kernels as R·group query
// vectors, so a prefill chunk reads each key and value row once per run
// instead of once per row. Row r of the run (position p0+r) sees positions
// [0, p0+r]: the scores of every vector are computed over the run's
// longest span and each row's softmax takes its own prefix; the
// accumulation goes segment by segment, all the rows that see the whole
// segment together and each row that sees part of it alone, with that
// part. Every score is the same dot product and every output element the
// same sum in position order, over the same segments, as attendGroup
// computes for the row alone, so results are bit-identical.
func (r *Runner) attendRun(l int, b *Batch, run attnRun, kvh int, buf []float32) {
	w := r.W
	hd, qd := w.HeadDim, w.QDim()
	group := w.Heads / w.KVHeads
	c := b.Seqs[run.i0]
	p0, rows := int(b.Pos[run.i0]), run.n
	nv := rows * group // query vectors: row-major, then head
	nmax := p0 + rows  // positions the last row sees
	scores := buf[:nv*nmax]
	qs := buf[nv*w.Ctx:][:nv*hd]
	stage := buf[nv*(w.Ctx+hd):][:nv*w.Ctx]
	outs := buf[nv*(2*w.Ctx+hd):][:nv*hd]
	scale := float32(1 / math.Sqrt(float64(hd)))
	f16 := c.Type() == kernels.F16
	bs := c.BlockSize()
	segs := (nmax + bs - 1) / bs
	ch := c.HeadDim()
	col := kvh * hd
	col, stride := (col/ch)*bs*ch+col%ch, ch

	for k := 0; k < rows; k++ {
		copy(qs[k*group*hd:(k+1)*group*hd], r.q[(run.i0+k)*qd+kvh*group*hd:][:group*hd])
	}
	if f16 {
		kernels.RoundF16Row(qs)
	}
	for s := 0; s < segs; s++ {
		off := s * bs
		m := min(bs, nmax-off)
		dst := stage[:nv*m]
		if f16 {
			kernels.AttnScoresF16(dst, qs, nv, hd, c.K16(l, s)[col:], stride, m)
		} else {
			kernels.AttnScoresF32(dst, qs, nv, hd, c.K32(l, s)[col:], stride, m)
		}
		for v := 0; v < nv; v++ {
			copy(scores[v*nmax+off:v*nmax+off+m], dst[v*m:(v+1)*m])
		}
	}
	for v := 0; v < nv; v++ {
		p := scores[v*nmax : v*nmax+p0+v/group+1]
		for t := range p {
			p[t] *= scale
		}
		softmax(p)
		if f16 {
			kernels.RoundF16Row(p)
		}
	}
	clear(outs)
	for s := 0; s < segs; s++ {
		off := s * bs
		m := min(bs, nmax-off)
		// Rows k ≥ full see the whole segment; rows below it, from first
		// on, see part of it (row k sees p0+k+1−off of its positions).
		full := max(0, off+m-p0-1)
		first := max(0, off-p0)
		if full < rows {
			n := (rows - full) * group
			p := stage[:n*m]
			for v := 0; v < n; v++ {
				src := (full*group + v) * nmax
				copy(p[v*m:(v+1)*m], scores[src+off:src+off+m])
			}
			o := outs[full*group*hd:]
			if f16 {
				kernels.AttnAccumF16(o, p, n, hd, c.V16(l, s)[col:], stride, m)
			} else {
				kernels.AttnAccumF32(o, p, n, hd, c.V32(l, s)[col:], stride, m)
			}
		}
		for k := first; k < min(full, rows); k++ {
			mk := p0 + k + 1 - off
			p := stage[:group*mk]
			for g := 0; g < group; g++ {
				src := (k*group + g) * nmax
				copy(p[g*mk:(g+1)*mk], scores[src+off:src+off+mk])
			}
			o := outs[k*group*hd:][:group*hd]
			if f16 {
				kernels.AttnAccumF16(o, p, group, hd, c.V16(l, s)[col:], stride, mk)
			} else {
				kernels.AttnAccumF32(o, p, group, hd, c.V32(l, s)[col:], stride, mk)
			}
		}
	}
	for k := 0; k < rows; k++ {
		copy(r.att[(run.i0+k)*qd+kvh*group*hd:][:group*hd], outs[k*group*hd:(k+1)*group*hd])
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
