package model

import "time"

// Phase is one part of a forward pass, as Runner.Phases times it.
type Phase int

// The phases of a forward pass, in the order a layer runs them.
const (
	PhaseEmbed     Phase = iota // token embeddings, RoPE angles, attention runs
	PhaseAttnNorm               // the first layer's attention RMS norm (the others' come with PhaseCombine)
	PhaseQKV                    // the Q, K and V products
	PhaseRoPE                   // rotating queries and keys, storing keys and values
	PhaseAttention              // scores, softmax and the weighted values
	PhaseAttnOut                // the output projection
	PhaseFFNNorm                // the projection's residual add and the feed-forward's RMS norm, one pass
	PhaseRoute                  // the gate product, routing, gathering the experts' rows
	PhaseExperts                // the ExpertRunner (local kernels or calls to other nodes), or a dense FFN's products
	PhaseCombine                // the experts' weighted sum (or the dense FFN's output), its residual add and the next layer's attention RMS norm
	PhaseLogits                 // the final norm and the output projection
	NumPhases
)

var phaseNames = [NumPhases]string{"embed", "attn_norm", "qkv", "rope_kv", "attention", "attn_out",
	"ffn_norm", "route", "experts", "combine", "logits"}

// String is the phase's name as metrics label it (snake case).
func (p Phase) String() string {
	if p < 0 || p >= NumPhases {
		return "unknown"
	}
	return phaseNames[p]
}

// PhaseTimes is the wall time spent in each phase, summed over forward
// passes.
type PhaseTimes [NumPhases]time.Duration

// Total is the sum over the phases.
func (t *PhaseTimes) Total() time.Duration {
	var s time.Duration
	for _, d := range t {
		s += d
	}
	return s
}

// clock starts timing a phase: the current time when r.Phases is set, the
// zero time (and no clock read) otherwise.
func (r *Runner) clock() time.Time {
	if r.Phases == nil {
		return time.Time{}
	}
	return time.Now()
}

// lap adds the time since t to phase p and returns the current time, to
// start the next phase; without r.Phases it does nothing.
func (r *Runner) lap(p Phase, t time.Time) time.Time {
	if r.Phases == nil {
		return t
	}
	now := time.Now()
	r.Phases[p] += now.Sub(t)
	return now
}
