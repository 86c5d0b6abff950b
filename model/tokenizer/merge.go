package tokenizer

// symbol is a piece of the word being merged: buf[start:start+n]. Symbols
// form a doubly linked list through prev/next (-1 ends it); a symbol merged
// into its left neighbour has n == 0.
type symbol struct {
	start, n   int32
	prev, next int32
	id         int32 // token whose text is the piece, -1 if none
}

// bigram is a candidate merge of two adjacent symbols. Higher key wins, ties
// go to the leftmost pair, as in llama.cpp's comparators (SPM: key = score of
// the merged piece; BPE: key = -rank).
type bigram struct {
	key         float32
	left, right int32
	size        int32 // bytes of the merged piece when queued; detects stale entries
	id          int32 // token of the merged piece, -1 if none
}

// bigramQueue is a binary max-heap of bigrams. It is written out instead of
// using container/heap so pushes and pops do not box values.
type bigramQueue []bigram

func (q bigramQueue) before(i, j int) bool {
	return q[i].key > q[j].key || (q[i].key == q[j].key && q[i].left < q[j].left)
}

func (q *bigramQueue) push(b bigram) {
	*q = append(*q, b)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.before(i, p) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *bigramQueue) pop() bigram {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && h.before(l, m) {
			m = l
		}
		if r < last && h.before(r, m) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}

// mergeSymbols runs the greedy merge loop shared by SPM and BPE over syms,
// whose pieces index buf. score reports whether two adjacent symbols may
// merge, the merge's key and the merged piece's token.
func mergeSymbols(buf []byte, syms []symbol, q *bigramQueue, score func(buf []byte, a, b *symbol) (key float32, id int32, ok bool)) {
	try := func(l, r int32) {
		if l < 0 || r < 0 {
			return
		}
		if k, id, ok := score(buf, &syms[l], &syms[r]); ok {
			q.push(bigram{key: k, left: l, right: r, size: syms[l].n + syms[r].n, id: id})
		}
	}
	*q = (*q)[:0]
	for i := int32(1); i < int32(len(syms)); i++ {
		try(i-1, i)
	}
	for len(*q) > 0 {
		bg := q.pop()
		left, right := &syms[bg.left], &syms[bg.right]
		// Pieces only grow, so equal sizes mean neither side changed.
		if left.n == 0 || right.n == 0 || left.n+right.n != bg.size {
			continue
		}
		left.n += right.n
		left.id = bg.id
		right.n = 0
		left.next = right.next
		if right.next >= 0 {
			syms[right.next].prev = bg.left
		}
		try(left.prev, bg.left)
		try(bg.left, left.next)
	}
}
