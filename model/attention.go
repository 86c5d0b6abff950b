package model

import (
	"math"

	"github.com/conclave-ai/conclave/kernels"
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
			r.attendRun(l, b, r.attnRuns[task/w.KVHeads], task%w.KVHeads, buf)
		}
	}
}

// attendRun computes, for the rows of a run (positions p0, p0+1, …), the
// attention of the query heads that share kv head kvh: row k over
// positions [0, p0+k] of the sequence. The run's rows × group query heads
// go through the kernels together as one set of query vectors, so a
// prefill chunk reads each key and value row once per run instead of once
// per row.
//
// With an F16 cache the queries and the probabilities are rounded to F16
// before they meet F16 keys and values, as ggml does when it multiplies an
// F32 operand with an F16 one. Each score is a kernels.DotF32 over the head
// dimension (a fixed lane order), each output element a sum in order over
// positions, so results do not depend on batching, runs, threads or the
// SIMD level.
//
// The sequence's positions live in blocks; the kernels run once per block
// segment, in position order, so the result is bit-identical to one pass
// over a contiguous cache. Scores cover the run's longest span (every
// vector the same dot products) and each row's softmax takes its own
// prefix. The accumulation goes segment by segment: the rows that see the
// whole segment together, each row that sees part of it alone with that
// part, so every row meets the same segments as it would alone. The
// kernels lay out vectors × segment length, so a segment's scores are
// computed into (and its probabilities gathered from) a staging area
// unless that is already the scores' layout (one vector, or one segment).
func (r *Runner) attendRun(l int, b *Batch, run attnRun, kvh int, buf []float32) {
	w := r.W
	hd, qd := w.HeadDim, w.QDim()
	group := w.Heads / w.KVHeads
	c := b.Seqs[run.i0]
	p0, rows := int(b.Pos[run.i0]), run.n
	nv := rows * group // query vectors: row-major, then head
	nmax := p0 + rows  // positions the last row sees
	scores := buf[:nv*nmax]
	qs := buf[nv*r.ctx:][:nv*hd]
	stage := buf[nv*(r.ctx+hd):][:nv*r.ctx]
	outs := buf[nv*(2*r.ctx+hd):][:nv*hd]
	scale := float32(1 / math.Sqrt(float64(hd)))
	f16 := c.Type() == kernels.F16
	bs := c.BlockSize()
	segs := (nmax + bs - 1) / bs
	// The head's rows within a block: from col, stride apart (contiguous
	// when the cache keeps each head's positions together).
	ch := c.HeadDim()
	col := kvh * hd
	col, stride := (col/ch)*bs*ch+col%ch, ch

	q := r.q[run.i0*qd+kvh*group*hd:][:group*hd]
	if rows > 1 || f16 {
		for k := 0; k < rows; k++ {
			copy(qs[k*group*hd:(k+1)*group*hd], r.q[(run.i0+k)*qd+kvh*group*hd:][:group*hd])
		}
		if f16 {
			kernels.RoundF16Row(qs)
		}
		q = qs
	}
	out := outs
	if rows == 1 {
		out = r.att[run.i0*qd+kvh*group*hd:][:group*hd] // the row's output, in place
	}
	// The next segment's rows (another cache block) are prefetched while
	// this one computes; the kernels prefetch within a block.
	prefetch := func(s int, v bool) {
		if s >= segs {
			return
		}
		m := min(bs, nmax-s*bs)
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
		m := min(bs, nmax-off)
		dst := scores[off:] // one vector, or one segment: in place
		if nv > 1 && segs > 1 {
			dst = stage[:nv*m]
		}
		if f16 {
			kernels.AttnScoresF16(dst, q, nv, hd, c.K16(l, s)[col:], stride, m)
		} else {
			kernels.AttnScoresF32(dst, q, nv, hd, c.K32(l, s)[col:], stride, m)
		}
		if nv > 1 && segs > 1 {
			for v := 0; v < nv; v++ {
				copy(scores[v*nmax+off:v*nmax+off+m], dst[v*m:(v+1)*m])
			}
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
	clear(out)
	accum := func(o, p []float32, n, s, m int) {
		if f16 {
			kernels.AttnAccumF16(o, p, n, hd, c.V16(l, s)[col:], stride, m)
		} else {
			kernels.AttnAccumF32(o, p, n, hd, c.V32(l, s)[col:], stride, m)
		}
	}
	// gather returns vectors [v0, v0+n)'s probabilities for positions
	// [off, off+m) laid out n × m.
	gather := func(v0, n, off, m int) []float32 {
		if n == 1 || (off == 0 && m == nmax) {
			return scores[v0*nmax+off:] // already n × m
		}
		p := stage[:n*m]
		for v := 0; v < n; v++ {
			src := (v0 + v) * nmax
			copy(p[v*m:(v+1)*m], scores[src+off:src+off+m])
		}
		return p
	}
	for s := 0; s < segs; s++ {
		prefetch(s+1, true)
		off := s * bs
		m := min(bs, nmax-off)
		// Rows k ≥ full see the whole segment; rows below it, from first
		// on, see part of it (row k sees p0+k+1−off of its positions).
		full := max(0, off+m-p0-1)
		first := max(0, off-p0)
		if full < rows {
			n := (rows - full) * group
			accum(out[full*group*hd:], gather(full*group, n, off, m), n, s, m)
		}
		for k := first; k < min(full, rows); k++ {
			mk := p0 + k + 1 - off
			accum(out[k*group*hd:][:group*hd], gather(k*group, group, off, mk), group, s, mk)
		}
	}
	if rows > 1 {
		for k := 0; k < rows; k++ {
			copy(r.att[(run.i0+k)*qd+kvh*group*hd:][:group*hd], outs[k*group*hd:(k+1)*group*hd])
		}
	}
}
