package engine

// span is the part of one running sequence that goes into a step: Count
// tokens starting at its first uncomputed position.
type span struct {
	Seq   int // index into the running list
	Count int
}

// planStep decides which tokens go into the next forward pass. pending[i] is
// the number of tokens running sequence i (in admission order) knows but has
// not computed yet: 1 for a decoding sequence, more for one still
// prefilling. Every decoding sequence gets its token first (the scheduler
// keeps their number ≤ budget); then prefilling sequences, oldest first, get
// chunks of at most chunk tokens until budget tokens are planned. A
// sequence with nothing pending is skipped. The result is appended to out.
func planStep(out []span, pending []int, budget, chunk int) []span {
	used := 0
	for i, p := range pending {
		if p == 1 && used < budget {
			out = append(out, span{Seq: i, Count: 1})
			used++
		}
	}
	for i, p := range pending {
		if p <= 1 || used >= budget {
			continue
		}
		n := min(p, chunk, budget-used)
		out = append(out, span{Seq: i, Count: n})
		used += n
	}
	return out
}
