package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/conclave-ai/conclave/kernels"
)

// pcgStream is the fixed second PCG seed word; Config.Seed is the first. It is
// a constant so that a given Seed names the same token stream in every build.
const pcgStream = 0x9e3779b97f4a7c15

// candidate is one token still in the running for the current draw.
type candidate struct {
	logit float32
	id    int32
}

// Sampler draws tokens for one sequence. It is not safe for concurrent use.
// It holds only its sequence's state (the generator and, with a penalty,
// its token counts); the vocabulary-sized buffers of a draw come from a
// process-wide list for the length of one [Sampler.Sample] call, so a
// server with many running sequences keeps only as many of them as draws
// run at once, and those stay resident between steps.
type Sampler struct {
	cfg   Config
	vocab int
	pcg   *rand.PCG
	rng   *rand.Rand

	counts []int32 // len vocab when a penalty is on; all zero between calls

	sc *scratch // the buffers of the draw in progress, nil between calls
}

// scratch is one draw's buffers.
type scratch struct {
	cand    []candidate // the candidate set, filtered in place
	weights []float64   // unnormalised probabilities, parallel to cand

	// Top-p's nucleus: its candidates' sort keys (and the radix sort's
	// second buffer) and logits, grown to the largest nucleus seen (a
	// peaked distribution's few tokens, up to the vocabulary when flat).
	keys, keys2 []uint64
	logitsBuf   []float32

	// Top-p: each token's bucket (bucketTotals); for top-p alone
	// (drawTopP), the sort keys of the nucleus's last bucket and of the
	// bucket a draw lands in before it (each with the radix sort's second
	// buffer), grown to the largest bucket seen.
	bucket              []uint16
	endKeys, endKeys2   []uint64
	drawKeys, drawKeys2 []uint64
}

// scratches is the process's free list of draw buffers, most recently
// returned first (the warmest in cache). A set is taken for one draw and
// returned after it, so the list never holds more sets than draws once ran
// at the same time: at most the threads drawing at once (a node's engine
// spreads a step's draws over its kernel threads), and never more than the
// sequences running then, each of which owned a set before the list. It
// does not shrink: a node that once drew on 64 threads keeps 64 sets.
var scratches struct {
	mu   sync.Mutex
	free []*scratch
}

// takeScratch returns buffers for a draw over a vocabulary of vocab tokens.
func takeScratch(vocab int) *scratch {
	scratches.mu.Lock()
	var sc *scratch
	if n := len(scratches.free); n > 0 {
		sc = scratches.free[n-1]
		scratches.free[n-1] = nil
		scratches.free = scratches.free[:n-1]
	}
	scratches.mu.Unlock()
	if sc == nil {
		sc = &scratch{}
	}
	if len(sc.cand) < vocab {
		sc.cand = make([]candidate, vocab)
		sc.weights = make([]float64, vocab)
	}
	return sc
}

// putScratch returns sc to the free list.
func putScratch(sc *scratch) {
	scratches.mu.Lock()
	scratches.free = append(scratches.free, sc)
	scratches.mu.Unlock()
}

// New returns a Sampler for a vocabulary of vocabSize tokens (> 0). Its error
// wraps [ErrInvalidConfig] when c fails [Config.Validate] or vocabSize <= 0.
func New(c Config, vocabSize int) (*Sampler, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if vocabSize <= 0 || int64(vocabSize) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: vocab size %d not in [1, %d]", ErrInvalidConfig, vocabSize, math.MaxInt32)
	}
	s := &Sampler{
		cfg:   c,
		vocab: vocabSize,
		pcg:   rand.NewPCG(c.Seed, pcgStream),
	}
	s.rng = rand.New(s.pcg)
	s.skip()
	if c.repeatPenalty() || c.presenceOrFreq() {
		s.counts = make([]int32, vocabSize)
	}
	return s, nil
}

// Config returns the configuration the Sampler was built with.
func (s *Sampler) Config() Config { return s.cfg }

// Reset reseeds the generator with Config.Seed (and skips Config.Skip
// draws), so the Sampler replays the token stream it produced since New for
// the same inputs.
func (s *Sampler) Reset() {
	s.pcg.Seed(s.cfg.Seed, pcgStream)
	s.skip()
}

// skip consumes the Config.Skip draws that earlier tokens used: one per
// non-greedy Sample call.
func (s *Sampler) skip() {
	if s.cfg.greedy() {
		return
	}
	for range s.cfg.Skip {
		s.rng.Float64()
	}
}

// Sample picks the next token from logits, whose length must equal the
// vocabulary size given to New (a mismatch is a broken invariant and panics).
// history is the sequence so far, prompt plus generated tokens, oldest first;
// it is read only by the penalties, and ids outside the vocabulary are
// ignored.
//
// Sample modifies logits in place: the penalties are written into it. Callers
// that need the raw logits afterwards must pass a copy. history is not
// modified and neither slice is retained.
//
// The chain is, in order:
//
//  1. repetition penalty over the last RepeatLastN tokens, then presence and
//     frequency penalties over the whole history;
//  2. if Temperature is 0, the argmax (ties to the lowest id) and stop;
//  3. top-k, keeping candidates sorted by descending logit, ties to lower id;
//  4. softmax of logit/Temperature over the remaining candidates;
//  5. top-p, then min-p, on those probabilities;
//  6. one uniform draw from the renormalised survivors.
//
// Every non-greedy call consumes exactly one value from the generator, and
// greedy calls consume none, so the same Seed and inputs give the same tokens.
// NaN logits are treated as -Inf; if every candidate is -Inf the first
// candidate is returned.
func (s *Sampler) Sample(logits []float32, history []int32) int32 {
	if len(logits) != s.vocab {
		panic(fmt.Sprintf("sample: %d logits for a vocabulary of %d", len(logits), s.vocab))
	}
	s.applyPenalties(logits, history)
	if s.cfg.greedy() {
		return argmax(logits)
	}
	u := s.rng.Float64() // drawn first so the stream never depends on the logits
	s.sc = takeScratch(s.vocab)
	var id int32
	noTopK := s.cfg.TopK <= 0 || s.cfg.TopK >= len(logits)
	switch {
	case !s.cfg.topP() && noTopK:
		id = s.sampleAll(logits, u)
	case s.cfg.topP() && noTopK && !s.cfg.minP():
		var ok bool
		if id, ok = s.drawTopP(logits, u); !ok {
			id = s.draw(logits, u)
		}
	default:
		id = s.draw(logits, u)
	}
	putScratch(s.sc)
	s.sc = nil
	return id
}

// draw is steps 3–6 of Sample, u its uniform draw.
func (s *Sampler) draw(logits []float32, u float64) int32 {
	cand, sorted, baseTotal := s.candidates(logits)

	maxLogit := float32(math.Inf(-1))
	if sorted {
		maxLogit = cand[0].logit
	} else {
		for _, c := range cand {
			maxLogit = max(maxLogit, c.logit)
		}
	}
	switch {
	case math.IsInf(float64(maxLogit), -1):
		return cand[0].id
	case math.IsInf(float64(maxLogit), 1):
		// The +Inf logits take all the mass (weights relative to +Inf are
		// NaN): the lowest id of them, as greedy and sampleAll pick.
		best := int32(-1)
		for _, c := range cand {
			if math.IsInf(float64(c.logit), 1) && (best < 0 || c.id < best) {
				best = c.id
			}
		}
		return best
	}

	// Weights are probabilities up to a common factor; the most likely
	// candidate has weight exactly 1, which min-p below relies on.
	w := s.sc.weights[:len(cand)]
	invT := 1 / float64(s.cfg.Temperature)
	var total float64
	if baseTotal > 0 {
		// Top-p's nucleus: the weights kernels.ExpSum gave these tokens
		// when the nucleus was found (several times faster than math.Exp).
		l := s.sc.logitsBuf[:len(cand)]
		for i, c := range cand {
			l[i] = c.logit
		}
		total = kernels.ExpSum(w, l, maxLogit, invT)
	} else {
		for i, c := range cand {
			w[i] = math.Exp(float64(c.logit-maxLogit) * invT)
			total += w[i]
		}
	}

	n := len(cand)
	if s.cfg.topP() {
		if baseTotal > 0 { // cand is a truncated superset of the nucleus
			total = baseTotal
		}
		target := float64(s.cfg.TopP) * total
		var cum float64
		for i := range n {
			cum += w[i]
			if cum >= target {
				n = i + 1
				break
			}
		}
	}
	if s.cfg.minP() {
		// Top-p keeps a prefix of the sorted candidates, so the weight-1
		// maximum is still present and the threshold is MinP itself.
		threshold := float64(s.cfg.MinP)
		kept := 0
		for i := range n {
			if w[i] >= threshold {
				cand[kept], w[kept] = cand[i], w[i]
				kept++
			}
		}
		n = kept
	}
	if n < len(cand) || baseTotal > 0 {
		total = 0
		for _, x := range w[:n] {
			total += x
		}
	}

	r := u * total
	last := 0
	for i := range n {
		if w[i] == 0 {
			continue
		}
		last = i
		r -= w[i]
		if r < 0 {
			return cand[i].id
		}
	}
	return cand[last].id // rounding left r at or just above 0
}

// sampleAll is steps 4–6 over the whole vocabulary in id order (no top-k
// or top-p to sort candidates): the weights come from kernels.ExpSum, about
// five times faster than math.Exp per token and within a few ulp of it, so a
// draw lands on another token than the float64 reference's only if u falls
// within ~1e-16 of a boundary between two tokens' shares.
func (s *Sampler) sampleAll(logits []float32, u float64) int32 {
	maxLogit := kernels.MaxF32(logits) // NaN counts as -Inf
	switch {
	case math.IsInf(float64(maxLogit), -1):
		return 0
	case math.IsInf(float64(maxLogit), 1):
		// Every weight relative to +Inf is NaN or 0: the +Inf logits take
		// all the mass, the first of them as greedy, top-k and top-p pick.
		for i, x := range logits {
			if math.IsInf(float64(x), 1) {
				return int32(i)
			}
		}
	}
	w := s.sc.weights[:len(logits)]
	total := kernels.ExpSum(w, logits, maxLogit, 1/float64(s.cfg.Temperature))
	if s.cfg.minP() {
		// The maximum has weight exactly 1, so the threshold is MinP.
		threshold := float64(s.cfg.MinP)
		total = 0
		for i, x := range w {
			if x < threshold {
				w[i] = 0
				continue
			}
			total += x
		}
	}
	return int32(drawIndex(w, u*total))
}

// drawIndex returns the first i at which r − (w[0] + … + w[i]) < 0, or the
// last nonzero weight's index when rounding leaves r at or just above 0
// (w holds at least one nonzero weight). Whole chunks of eight weights are
// skipped while r stays above their sum, so the dependent subtraction
// runs once per chunk instead of once per token; the sums round slightly
// differently from one token at a time, which moves a draw only when r
// lies within ~1e-16 of a boundary between two tokens' shares.
func drawIndex(w []float64, r float64) int {
	i := 0
	for ; i+8 <= len(w); i += 8 {
		c := (*[8]float64)(w[i:])
		s := ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7]))
		if r-s < 0 {
			break
		}
		r -= s
	}
	last := -1
	for ; i < len(w); i++ {
		if w[i] == 0 {
			continue
		}
		last = i
		r -= w[i]
		if r < 0 {
			return i
		}
	}
	if last < 0 { // the tail held no weight: the last nonzero before it
		for last = len(w) - 1; last > 0 && w[last] == 0; last-- {
		}
	}
	return last
}

// applyPenalties writes the repetition, presence and frequency penalties into
// logits. s.counts is zero on entry and on return.
func (s *Sampler) applyPenalties(logits []float32, history []int32) {
	c := s.cfg
	vocab := int32(s.vocab)
	if c.repeatPenalty() {
		window := history
		n := c.RepeatLastN
		if n == 0 {
			n = DefaultRepeatLastN
		}
		if n > 0 && len(window) > n {
			window = window[len(window)-n:]
		}
		// counts marks tokens already penalised, so repeats in the window
		// are penalised once, as in llama.cpp.
		for _, t := range window {
			if t < 0 || t >= vocab || s.counts[t] != 0 {
				continue
			}
			s.counts[t] = 1
			if l := logits[t]; l > 0 {
				logits[t] = l / c.RepeatPenalty
			} else {
				logits[t] = l * c.RepeatPenalty
			}
		}
		for _, t := range window {
			if t >= 0 && t < vocab {
				s.counts[t] = 0
			}
		}
	}
	if c.presenceOrFreq() {
		generated := history[min(c.PromptLen, len(history)):]
		for _, t := range generated {
			if t >= 0 && t < vocab {
				s.counts[t]++
			}
		}
		for _, t := range generated {
			if t < 0 || t >= vocab {
				continue
			}
			if n := s.counts[t]; n > 0 {
				logits[t] -= c.PresencePenalty + float32(n)*c.FrequencyPenalty
				s.counts[t] = 0
			}
		}
	}
}

// candidates fills the draw's candidates from logits and reports whether it is sorted by
// descending logit (ties to the lower id):
//
//   - top-k on: the TopK best, sorted;
//   - top-p on without top-k: a sorted prefix of the vocabulary that contains
//     the whole nucleus, with baseTotal the weight sum over the full
//     vocabulary that top-p must measure against;
//   - otherwise every token in id order, unsorted.
//
// baseTotal is 0 when the weight sum over the returned candidates is the
// right base.
func (s *Sampler) candidates(logits []float32) (cand []candidate, sorted bool, baseTotal float64) {
	k := s.cfg.TopK
	if k > 0 && k < len(logits) {
		return s.selectTop(logits, k), true, 0
	}
	if s.cfg.topP() {
		maxLogit := kernels.MaxF32(logits) // NaN counts as -Inf
		if !math.IsInf(float64(maxLogit), -1) {
			cand, total := s.nucleus(logits, maxLogit, 1/float64(s.cfg.Temperature))
			return cand, true, total
		}
	}
	cand = s.sc.cand[:len(logits)]
	for i, l := range logits {
		cand[i] = candidate{logit: sanitize(l), id: int32(i)}
	}
	return cand, false, 0 // every logit -Inf or NaN: Sample returns the first
}

// nucleusBits is how many leading bits of the order key bucket the
// vocabulary when top-p looks for its nucleus: sign, exponent and the
// mantissa's top two bits, so a bucket spans a quarter of an octave.
const nucleusBits = 11

// nucleus returns the sorted prefix of the vocabulary (by descending logit,
// ties to the lower id) that holds top-p's nucleus, and the vocabulary's
// weight sum (kernels.ExpSum at temperature 1/invT, maxLogit its largest
// logit). Instead of sorting the vocabulary it buckets it by the leading
// bits of each logit's order key, summing each bucket's weights; the
// buckets, best first, are taken until their weight reaches TopP of the
// total, and only their tokens are sorted. The weights are the ones Sample
// computes for the same tokens; the bucket sums add them in another order,
// so the last bucket is followed by one more unless the sum clears the
// target by a margin far above that rounding.
func (s *Sampler) nucleus(logits []float32, maxLogit float32, invT float64) ([]candidate, float64) {
	w := s.sc.weights[:len(logits)]
	total := kernels.ExpSum(w, logits, maxLogit, invT)
	target := float64(s.cfg.TopP) * total
	bk := s.sc.buckets(len(logits))
	var count [1 << nucleusBits]int32
	var sum [1 << nucleusBits]float64
	bucketTotals(logits, w, bk, &count, &sum)
	last, m := len(sum)-1, 0
	var acc float64
	for b, c := range count {
		if c == 0 {
			continue
		}
		if acc >= target*(1+1e-9) {
			last = b - 1 // the previous buckets hold the nucleus with margin
			break
		}
		acc += sum[b]
		m += int(c)
		if acc >= target {
			last = b // one more nonempty bucket unless the margin is met
		}
	}
	if last == len(sum)-1 || !(target > 0) {
		// Not reached, or no weight at all (a +Inf logit makes every
		// weight 0): the whole vocabulary.
		last, m = len(sum)-1, len(logits)
	}
	sc := s.sc
	if cap(sc.keys) < m {
		sc.keys, sc.keys2 = make([]uint64, m), make([]uint64, m)
		sc.logitsBuf = make([]float32, m)
	}
	keys := sc.keys[:0]
	for i, b := range bk {
		if int(b) <= last {
			keys = append(keys, uint64(orderKey(logits[i]))<<32|uint64(uint32(i)))
		}
	}
	cand := s.sc.cand[:len(keys)]
	sortCandidates(cand, logits, keys, sc.keys2[:len(keys)])
	return cand, total
}

// drawTopP is Sample's draw for top-p without top-k or min-p, the chain
// OpenAI clients ask for. It finds the nucleus and the drawn token as draw
// does (descending logit, ties to the lower id; weights from
// kernels.ExpSum), but without sorting the nucleus: the vocabulary is
// bucketed by the leading bits of each token's order key (nucleusBits),
// with each bucket's weight summed; the nucleus ends in the first bucket
// whose sum takes the running total to TopP of the whole, and only that
// bucket is sorted to find the last token; the draw then skips whole
// buckets while their sums stay below it and sorts only the bucket it lands
// in. A flat distribution's nucleus is most of the vocabulary, which draw
// radix-sorts; here a draw sorts one or two buckets. The bucket sums add
// the weights in another order than one token at a time, so the nucleus's
// end or the drawn token differ from draw's only when the target lies
// within ~1e-16 of a boundary between two tokens' shares (as sampleAll's
// chunked draw). ok is false for what draw handles by its own rules: no
// finite largest logit, or no weight.
func (s *Sampler) drawTopP(logits []float32, u float64) (id int32, ok bool) {
	maxLogit := kernels.MaxF32(logits) // NaN counts as -Inf
	if math.IsInf(float64(maxLogit), 0) {
		return 0, false
	}
	sc, n := s.sc, len(logits)
	w := sc.weights[:n]
	total := kernels.ExpSum(w, logits, maxLogit, 1/float64(s.cfg.Temperature))
	target := float64(s.cfg.TopP) * total
	if !(target > 0) {
		return 0, false
	}
	bk := sc.buckets(n)
	var count [1 << nucleusBits]int32
	var sum [1 << nucleusBits]float64
	bucketTotals(logits, w, bk, &count, &sum)
	// The nucleus: every bucket before end, and a sorted prefix of end's.
	end, last := -1, -1
	var before float64 // the buckets' sums before end
	for b, c := range count {
		if c == 0 {
			continue
		}
		if before+sum[b] >= target {
			end = b
			break
		}
		before += sum[b]
		last = b
	}
	if end < 0 { // rounding kept the whole short of the target: all of it
		end = last
		before -= sum[last]
	}
	endKeys := bucketKeys(&sc.endKeys, &sc.endKeys2, logits, bk, end, int(count[end]))
	cum := before
	k := 0
	for k < len(endKeys) {
		cum += w[uint32(endKeys[k])]
		k++
		if cum >= target {
			break
		}
	}
	endKeys = endKeys[:k]

	r := u * cum // cum: the nucleus's weight
	lastID := int32(-1)
	walk := func(keys []uint64) bool {
		for _, key := range keys {
			i := int32(uint32(key))
			if w[i] == 0 {
				continue
			}
			lastID = i
			if r -= w[i]; r < 0 {
				return true
			}
		}
		return false
	}
	for b := 0; b < end; b++ {
		if count[b] == 0 {
			continue
		}
		if r-sum[b] >= 0 {
			r -= sum[b]
			continue
		}
		if walk(bucketKeys(&sc.drawKeys, &sc.drawKeys2, logits, bk, b, int(count[b]))) {
			return lastID, true
		}
		// Rounding left r at or just above 0 after the bucket: on to the
		// next ones, token by token.
	}
	walk(endKeys)
	// Drawn, or the nucleus's last weighted token when rounding left r ≥ 0;
	// none at all would take bucket sums ~6e-8 short of ExpSum's total,
	// which no real vocabulary comes near: draw's rules then.
	return lastID, lastID >= 0
}

// buckets returns the draw's per-token bucket buffer for n tokens.
func (sc *scratch) buckets(n int) []uint16 {
	if cap(sc.bucket) < n {
		sc.bucket = make([]uint16, n)
	}
	return sc.bucket[:n]
}

// bucketTotals buckets the vocabulary by the leading nucleusBits bits of
// each token's order key (a quarter-octave of logits each): bk[i] is token
// i's bucket, and count and sum each bucket's tokens and weights (w).
func bucketTotals(logits []float32, w []float64, bk []uint16, count *[1 << nucleusBits]int32, sum *[1 << nucleusBits]float64) {
	const shift = 32 - nucleusBits
	// Two sets of totals, for even and odd tokens, so that the
	// read-modify-writes of neighbouring tokens in one bucket do not wait
	// on each other; added up in a fixed order afterwards.
	var count1 [1 << nucleusBits]int32
	var sum1 [1 << nucleusBits]float64
	n2 := len(logits) &^ 1
	for i := 0; i < n2; i += 2 {
		b0, b1 := orderKey(logits[i])>>shift, orderKey(logits[i+1])>>shift
		bk[i], bk[i+1] = uint16(b0), uint16(b1)
		count[b0]++
		sum[b0] += w[i]
		count1[b1]++
		sum1[b1] += w[i+1]
	}
	if n2 < len(logits) {
		b := orderKey(logits[n2]) >> shift
		bk[n2] = uint16(b)
		count[b]++
		sum[b] += w[n2]
	}
	for b := range sum {
		count[b] += count1[b]
		sum[b] += sum1[b]
	}
}

// bucketKeys returns the sort keys (orderKey above the token id) of the
// count tokens whose bucket (bk) is b, sorted: descending logit, ties to
// the lower id. They are gathered in *buf and sorted there or in *tmp
// (each grown as needed).
func bucketKeys(buf, tmp *[]uint64, logits []float32, bk []uint16, b, count int) []uint64 {
	if cap(*buf) < count {
		*buf, *tmp = make([]uint64, 0, count), make([]uint64, count)
	} else if cap(*tmp) < count {
		*tmp = make([]uint64, count)
	}
	keys := (*buf)[:0]
	for i, x := range bk {
		if int(x) == b {
			keys = append(keys, uint64(orderKey(logits[i]))<<32|uint64(uint32(i)))
		}
	}
	return sortKeys(keys, (*tmp)[:count])
}

// orderKey maps a logit to a key whose ascending order is descending logit
// order: NaN as -Inf, and −0 and +0 (which compare equal) to one key.
// Equal logits, and only they, share a key.
func orderKey(l float32) uint32 {
	b := math.Float32bits(l)
	if l != l {
		b = 0xff800000 // NaN: -Inf
	}
	if b == 1<<31 {
		b = 0 // −0: +0
	}
	// Negative values flip every bit (a larger magnitude, a smaller
	// key), the others only the sign bit; without a branch, as signs
	// come in no predictable order. Then ^ for descending order.
	return ^(b ^ (uint32(int32(b)>>31) | 1<<31))
}

// sortCandidates sorts keys (orderKey above the token id, in id order) and
// fills cand with their tokens: descending logit, ties to the lower id
// (byDescendingLogit in the tests). Small sets take a comparison sort of
// the keys; large ones a stable least-significant-digit radix sort on the
// order key (one counting pass for all four bytes; passes over a uniform
// byte skipped), which keeps ties in id order. tmp holds len(keys) values.
func sortCandidates(cand []candidate, logits []float32, keys, tmp []uint64) {
	keys = sortKeys(keys, tmp)
	for i, k := range keys {
		cand[i] = candidate{logit: sanitize(logits[uint32(k)]), id: int32(uint32(k))}
	}
}

// sortKeys sorts keys (orderKey above the token id) ascending and returns
// them: in keys, or in tmp (which holds len(keys) values) after an odd
// number of radix passes.
func sortKeys(keys, tmp []uint64) []uint64 {
	n := len(keys)
	if n <= 1024 {
		slices.Sort(keys)
	} else {
		var count [4][256]int
		for _, k := range keys {
			count[0][byte(k>>32)]++
			count[1][byte(k>>40)]++
			count[2][byte(k>>48)]++
			count[3][byte(k>>56)]++
		}
		for p := range count {
			c := &count[p]
			shift := 32 + 8*p
			if c[byte(keys[0]>>shift)] == n {
				continue // one digit value: this pass would not move anything
			}
			at := 0
			for d, m := range c {
				c[d], at = at, at+m
			}
			for _, k := range keys {
				d := byte(k >> shift)
				tmp[c[d]] = k
				c[d]++
			}
			keys, tmp = tmp[:n], keys
		}
	}
	return keys
}

// selectTop fills the draw's first k candidates with the k best logits, sorted best first, for
// 0 < k <= len(logits). It keeps a bounded min-heap with the worst at the
// root: O(V log k) with no allocation, instead of sorting the vocabulary.
func (s *Sampler) selectTop(logits []float32, k int) []candidate {
	h := s.sc.cand[:k]
	for i := range k {
		h[i] = candidate{logit: sanitize(logits[i]), id: int32(i)}
	}
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	for i := k; i < len(logits); i++ {
		c := candidate{logit: sanitize(logits[i]), id: int32(i)}
		if worse(h[0], c) {
			h[0] = c
			siftDown(h, 0)
		}
	}
	// Heap sort: repeatedly move the worst to the end, leaving best first.
	for end := k - 1; end > 0; end-- {
		h[0], h[end] = h[end], h[0]
		siftDown(h[:end], 0)
	}
	return h
}

// worse reports whether a ranks below b: a lower logit, or an equal logit
// and a higher id.
func worse(a, b candidate) bool {
	return a.logit < b.logit || (a.logit == b.logit && a.id > b.id)
}

// siftDown restores the worst-at-root heap property below index i.
func siftDown(h []candidate, i int) {
	for {
		least := i
		l, r := 2*i+1, 2*i+2
		if l < len(h) && worse(h[l], h[least]) {
			least = l
		}
		if r < len(h) && worse(h[r], h[least]) {
			least = r
		}
		if least == i {
			return
		}
		h[i], h[least] = h[least], h[i]
		i = least
	}
}

// argmax returns the index of the largest logit, the lowest on ties; NaN is
// never chosen, and all -Inf or NaN gives 0.
func argmax(logits []float32) int32 {
	best := kernels.MaxF32(logits)
	if math.IsInf(float64(best), -1) {
		return 0
	}
	for i, l := range logits {
		if l == best {
			return int32(i)
		}
	}
	return 0 // unreachable: best is one of the logits
}

func sanitize(l float32) float32 {
	if l != l { // NaN
		return float32(math.Inf(-1))
	}
	return l
}
