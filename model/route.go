package model

import (
	"github.com/conclave-ai/conclave/kernels"
)

// Routing is the gate's decision for a batch at one layer: for each of Rows
// tokens, TopK experts and their weights, sorted by ascending expert index.
type Routing struct {
	Rows, TopK int
	Experts    []int32   // Rows × TopK expert indices
	Weights    []float32 // Rows × TopK weights (renormalised to sum to 1 when the model says so)
}

// Route computes softmax top-k gating for rows of gate logits (rows ×
// experts) into r, reusing its slices. Ties in probability go to the lower
// expert index. logits are overwritten with the softmax probabilities.
// When norm is set the chosen weights are divided by their sum,
// as Mixtral does.
func Route(r *Routing, logits []float32, rows, experts, k int, norm bool) {
	r.Rows, r.TopK = rows, k
	if cap(r.Experts) < rows*k {
		r.Experts = make([]int32, rows*k)
		r.Weights = make([]float32, rows*k)
	}
	r.Experts, r.Weights = r.Experts[:rows*k], r.Weights[:rows*k]
	for i := 0; i < rows; i++ {
		row := logits[i*experts : (i+1)*experts]
		softmax(row)
		ids := r.Experts[i*k : (i+1)*k]
		ws := r.Weights[i*k : (i+1)*k]
		// Selection of the k largest, k is tiny (≤ 8 in practice).
		for j := 0; j < k; j++ {
			best := -1
			for e := 0; e < experts; e++ {
				if taken(ids[:j], e) {
					continue
				}
				if best < 0 || row[e] > row[best] {
					best = e
				}
			}
			ids[j] = int32(best)
			ws[j] = row[best]
		}
		if norm {
			var sum float64
			for _, w := range ws {
				sum += float64(w)
			}
			s := float32(sum)
			for j := range ws {
				ws[j] /= s
			}
		}
		// Ascending expert order, so combining never depends on which
		// expert answered first.
		for a := 1; a < k; a++ {
			for b := a; b > 0 && ids[b] < ids[b-1]; b-- {
				ids[b], ids[b-1] = ids[b-1], ids[b]
				ws[b], ws[b-1] = ws[b-1], ws[b]
			}
		}
	}
}

func taken(ids []int32, e int) bool {
	for _, x := range ids {
		if int(x) == e {
			return true
		}
	}
	return false
}

// softmax normalises x in place (kernels.Softmax: exponentials in float32
// relative to the maximum, their sum accumulated in float64, as ggml does).
func softmax(x []float32) { kernels.Softmax(x) }

// Plan groups a routing by expert: one group per expert that received at
// least one row, in ascending expert order, with rows ascending. slot maps
// each (row, choice) of the routing to its position in the concatenation of
// the groups' rows, so outputs can be found again when combining. Groups'
// Rows slices are carved from rowsBuf (len ≥ Rows×TopK).
func Plan(r *Routing, experts int, groups []ExpertGroup, rowsBuf []int32, slot []int32) []ExpertGroup {
	groups = groups[:0]
	n := 0
	for e := 0; e < experts; e++ {
		start := n
		for i := 0; i < r.Rows; i++ {
			for j := 0; j < r.TopK; j++ {
				if int(r.Experts[i*r.TopK+j]) == e {
					rowsBuf[n] = int32(i)
					slot[i*r.TopK+j] = int32(n)
					n++
				}
			}
		}
		if n > start {
			groups = append(groups, ExpertGroup{Expert: e, Rows: rowsBuf[start:n:n]})
		}
	}
	return groups
}
