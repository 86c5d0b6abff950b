package engine

import (
	"math"
	"testing"
)

// TestLogprobsNaNLogit: a NaN logit counts as −Inf for the logprobs, as
// for the sampler; one made every logprob NaN (the response then failed to
// encode) and was listed among the top logprobs.
func TestLogprobsNaNLogit(t *testing.T) {
	logits := []float32{0, 1, 2, float32(math.NaN())}
	lse := logSumExp(logits)
	want := math.Log(math.Exp(0) + math.Exp(1) + math.Exp(2))
	if math.Abs(lse-want) > 1e-12 {
		t.Fatalf("logSumExp = %v, want %v", lse, want)
	}
	top := topLogprobs(logits, 4, lse)
	if len(top) != 3 || top[0].Token != 2 || top[1].Token != 1 || top[2].Token != 0 {
		t.Fatalf("top %+v, want tokens 2, 1, 0 (no NaN)", top)
	}
	for _, tl := range top {
		if tl.Logprob != tl.Logprob {
			t.Errorf("NaN logprob in %+v", top)
		}
	}
}
