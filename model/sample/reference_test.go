package sample

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// reference is a direct float64 transcription of the documented chain (no
// penalties), using the uniform draw u. Candidates are in descending-logit
// order when top-k or top-p is on, otherwise in id order, as in Sample.
func reference(c Config, logits []float32, u float64) int32 {
	cand := make([]candidate, len(logits))
	for i, l := range logits {
		cand[i] = candidate{l, int32(i)}
	}
	if (c.TopK > 0 && c.TopK < len(cand)) || c.topP() {
		slices.SortFunc(cand, byDescendingLogit)
	}
	if c.TopK > 0 && c.TopK < len(cand) {
		cand = cand[:c.TopK]
	}
	maxLogit := math.Inf(-1)
	for _, x := range cand {
		maxLogit = max(maxLogit, float64(x.logit))
	}
	w := make([]float64, len(cand))
	var total float64
	for i, x := range cand {
		w[i] = math.Exp((float64(x.logit) - maxLogit) / float64(c.Temperature))
		total += w[i]
	}
	if c.topP() {
		var cum float64
		for i := range w {
			cum += w[i]
			if cum >= float64(c.TopP)*total {
				cand, w = cand[:i+1], w[:i+1]
				break
			}
		}
	}
	if c.minP() {
		var keptC []candidate
		var keptW []float64
		for i := range w {
			if w[i] >= float64(c.MinP) {
				keptC, keptW = append(keptC, cand[i]), append(keptW, w[i])
			}
		}
		cand, w = keptC, keptW
	}
	total = 0
	for _, x := range w {
		total += x
	}
	r := u * total
	for i := range w {
		r -= w[i]
		if r < 0 {
			return cand[i].id
		}
	}
	return cand[len(cand)-1].id
}

// TestSampleMatchesReference covers both top-p strategies (the widening
// partial selection on peaked logits, the full sort on flat ones) and every
// filter combination, draw by draw.
func TestSampleMatchesReference(t *testing.T) {
	configs := []Config{
		{Temperature: 1},
		{Temperature: 0.7, TopK: 50},
		{Temperature: 1, TopP: 0.9},
		{Temperature: 1.3, TopP: 0.5},
		{Temperature: 1, MinP: 0.1},
		{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05},
		{Temperature: 1, TopP: 0.99, MinP: 0.01},
	}
	shapes := []struct {
		name  string
		vocab int
		scale float32 // logits in [-10, 10) times scale: larger is more peaked
	}{
		{"small flat", 37, 0.3},
		{"peaked", 5000, 3},
		{"flat", 5000, 0.05},
		{"medium", 5000, 0.6},
	}
	for _, sh := range shapes {
		for ci, c := range configs {
			t.Run(fmt.Sprintf("%s/%d", sh.name, ci), func(t *testing.T) {
				c.Seed = uint64(ci + 100)
				s := mustNew(t, c, sh.vocab)
				draws := rand.New(rand.NewPCG(c.Seed, pcgStream))
				for step := range 100 {
					logits := randomLogits(uint64(step), sh.vocab)
					for i := range logits {
						logits[i] *= sh.scale
					}
					want := reference(c, logits, draws.Float64())
					if got := s.Sample(logits, nil); got != want {
						t.Fatalf("step %d: Sample = %d, reference = %d", step, got, want)
					}
				}
			})
		}
	}
}

// TestNucleusSelectionIsPartial checks that top-p without top-k sorts only
// a few tokens when the nucleus is small, and still returns the exact
// prefix of the sorted vocabulary.
func TestNucleusSelectionIsPartial(t *testing.T) {
	const vocab = 8000
	logits := peakedLogits(vocab)
	s := mustNew(t, Config{Temperature: 1, TopP: 0.95}, vocab)
	s.sc = takeScratch(s.vocab) // as Sample does around a draw
	cand, sorted, base := s.candidates(logits)
	if !sorted || len(cand) > 100 || base <= 0 {
		t.Fatalf("candidates: len %d sorted %v base %v, want ≤ 100 of the 20 lifted tokens' buckets, sorted, base > 0",
			len(cand), sorted, base)
	}
	want := make([]candidate, vocab)
	for i, l := range logits {
		want[i] = candidate{l, int32(i)}
	}
	slices.SortFunc(want, byDescendingLogit)
	if !slices.Equal(cand, want[:len(cand)]) {
		t.Error("partial selection is not the sorted prefix of the vocabulary")
	}
}

// byDescendingLogit is the candidates' order the sampler implements
// without comparisons (orderKey, sortCandidates): best first, ties to the lower id; a total order,
// so the result does not depend on the sort's stability.
func byDescendingLogit(a, b candidate) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	}
	return cmp.Compare(a.id, b.id)
}
