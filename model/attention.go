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
func (r *Runner) attendGroup(l int, c *kvcache.Cache, pos, i, kvh int, buf []float32) {
	w := r.W
	hd, kvd, qd := w.HeadDim, w.KVDim(), w.QDim()
	group := w.Heads / w.KVHeads
	n := pos + 1
	scores := buf[:group*n]                       // group × n
	qs := buf[group*w.Ctx : group*w.Ctx+group*hd] // group × hd
	scale := float32(1 / math.Sqrt(float64(hd)))
	k16, v16 := c.K16(l), c.V16(l)
	k32, v32 := c.K32(l), c.V32(l)

	q := r.q[i*qd+kvh*group*hd:][:group*hd]
	if k16 != nil {
		copy(qs, q)
		kernels.RoundF16Row(qs)
		kernels.AttnScoresF16(scores, qs, group, hd, k16[kvh*hd:], kvd, n)
	} else {
		kernels.AttnScoresF32(scores, q, group, hd, k32[kvh*hd:], kvd, n)
	}
	for t := range scores {
		scores[t] *= scale
	}
	for g := 0; g < group; g++ {
		p := scores[g*n : (g+1)*n]
		softmax(p)
		if v16 != nil {
			kernels.RoundF16Row(p)
		}
	}
	out := r.att[i*qd+kvh*group*hd:][:group*hd]
	clear(out)
	if v16 != nil {
		kernels.AttnAccumF16(out, scores, group, hd, v16[kvh*hd:], kvd, n)
	} else {
		kernels.AttnAccumF32(out, scores, group, hd, v32[kvh*hd:], kvd, n)
	}
}
