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
// F32 operand with an F16 one. Each score is a dot product summed in order
// over the head dimension, each output element a sum in order over
// positions, so results do not depend on batching or threads.
func (r *Runner) attendGroup(l int, c *kvcache.Cache, pos, i, kvh int, buf []float32) {
	w := r.W
	hd, kvd, qd := w.HeadDim, w.KVDim(), w.QDim()
	group := w.Heads / w.KVHeads
	n := pos + 1
	scores := buf[:group*n]                            // group × n
	qs := buf[group*w.Ctx : group*w.Ctx+group*hd]      // group × hd
	row := buf[group*(w.Ctx+hd) : group*(w.Ctx+hd)+hd] // one key or value row as F32
	scale := float32(1 / math.Sqrt(float64(hd)))
	k16, v16 := c.K16(l), c.V16(l)
	k32, v32 := c.K32(l), c.V32(l)

	for g := 0; g < group; g++ {
		q := r.q[i*qd+(kvh*group+g)*hd:][:hd]
		dst := qs[g*hd : (g+1)*hd]
		if k16 != nil {
			for d := range hd {
				dst[d] = kernels.F16ToF32(kernels.F32ToF16(q[d]))
			}
		} else {
			copy(dst, q)
		}
	}
	for t := 0; t < n; t++ {
		kr := row
		if k16 != nil {
			src := k16[t*kvd+kvh*hd:][:hd]
			for d, x := range src {
				kr[d] = kernels.F16ToF32(x)
			}
		} else {
			kr = k32[t*kvd+kvh*hd:][:hd]
		}
		for g := 0; g < group; g++ {
			q := qs[g*hd : (g+1)*hd]
			var s float32
			for d, kv := range kr {
				s += q[d] * kv
			}
			scores[g*n+t] = s * scale
		}
	}
	for g := 0; g < group; g++ {
		p := scores[g*n : (g+1)*n]
		softmax(p)
		if v16 != nil {
			for t := range p {
				p[t] = kernels.F16ToF32(kernels.F32ToF16(p[t]))
			}
		}
		clear(r.att[i*qd+(kvh*group+g)*hd:][:hd])
	}
	for t := 0; t < n; t++ {
		vr := row
		if v16 != nil {
			src := v16[t*kvd+kvh*hd:][:hd]
			for d, x := range src {
				vr[d] = kernels.F16ToF32(x)
			}
		} else {
			vr = v32[t*kvd+kvh*hd:][:hd]
		}
		for g := 0; g < group; g++ {
			p := scores[g*n+t]
			out := r.att[i*qd+(kvh*group+g)*hd:][:hd]
			for d, v := range vr {
				out[d] += p * v
			}
		}
	}
}
