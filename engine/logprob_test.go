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
	top := topLogprobs(logits, 4, normOf(logits))
	if len(top) != 3 || top[0].Token != 2 || top[1].Token != 1 || top[2].Token != 0 {
		t.Fatalf("top %+v, want tokens 2, 1, 0 (no NaN)", top)
	}
	for _, tl := range top {
		if tl.Logprob != tl.Logprob {
			t.Errorf("NaN logprob in %+v", top)
		}
	}
}

// TestLogprobsPosInfLogit: +Inf logits hold all the probability, shared;
// the certain token's logprob was NaN (+Inf − +Inf), reported as -9999.
func TestLogprobsPosInfLogit(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		logits []float32
		want   float32 // the +Inf tokens' logprob
	}{
		{[]float32{0, inf, 1, 0.5}, 0},
		{[]float32{inf, 0, inf, 1}, float32(-math.Ln2)},
	} {
		norm := normOf(tc.logits)
		for id, v := range tc.logits {
			got, want := norm.logprob(v), float32(math.Inf(-1))
			if math.IsInf(float64(v), 1) {
				want = tc.want
			}
			if got != want {
				t.Errorf("%v: logprob of %d = %v, want %v", tc.logits, id, got, want)
			}
		}
		top := topLogprobs(tc.logits, 2, norm)
		if top[0].Logprob != tc.want || !math.IsInf(float64(tc.logits[top[0].Token]), 1) {
			t.Errorf("%v: top %+v", tc.logits, top)
		}
	}
}
