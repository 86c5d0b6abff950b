package sample

import (
	"math"
	"testing"
)

// TestPosInfLogit: a +Inf logit is the certain choice under every
// configuration (plain temperature sampling returned token 0). A tiny
// repetition penalty, which Validate and the HTTP API (repetition_penalty
// in (0, 10]) accept, turns a repeated token's positive logit into +Inf.
func TestPosInfLogit(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []Config{
		{Temperature: 0},
		{Temperature: 1, TopP: 0.9},
		{Temperature: 1, TopK: 2},
		{Temperature: 1},
		{Temperature: 1, MinP: 0.1},
	} {
		s := mustNew(t, c, 4)
		if got := s.Sample([]float32{0, 1, inf, 0.5}, nil); got != 2 {
			t.Errorf("%+v: Sample = %d, want 2 (the +Inf logit)", c, got)
		}
	}
	// Reached through a valid config: 2/1e-40 overflows to +Inf.
	s := mustNew(t, Config{Temperature: 1, RepeatPenalty: 1e-40}, 4)
	if got := s.Sample([]float32{0, 1, 2, 0.5}, []int32{2}); got != 2 {
		t.Errorf("RepeatPenalty 1e-40, history [2]: Sample = %d, want 2", got)
	}
}

// TestTwoPosInfLogits: with several +Inf logits every configuration picks
// the lowest id of them; top-k and top-p gave their weights NaN and fell
// through to the last.
func TestTwoPosInfLogits(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []Config{
		{Temperature: 0},
		{Temperature: 1, TopK: 3},
		{Temperature: 1, TopP: 0.9},
		{Temperature: 1, TopK: 3, TopP: 0.5, MinP: 0.1},
		{Temperature: 1},
	} {
		s := mustNew(t, c, 5)
		if got := s.Sample([]float32{0, inf, 1, inf, 0.5}, nil); got != 1 {
			t.Errorf("%+v: Sample = %d, want 1 (the first +Inf logit)", c, got)
		}
	}
}
