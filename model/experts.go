package model

import (
	"context"
	"errors"

	"github.com/conclave-ai/conclave/kernels"
)

// ExpertGroup is the work one expert receives for one layer of a batch: the
// batch rows the gate routed to it, their inputs, and room for its outputs.
type ExpertGroup struct {
	Expert int       // expert index within the layer
	Rows   []int32   // batch rows routed here, ascending
	In     []float32 // len(Rows) × Dim normalised hidden states, row-major
	Out    []float32 // len(Rows) × Dim, filled by the ExpertRunner
}

// ErrExpertUnavailable marks an ExpertRunner failure that is no fault of
// the request: no replica of an expert answered and there was nothing to
// compute it from here (the experts are still loading, or their nodes are
// gone). Retrying later may succeed.
var ErrExpertUnavailable = errors.New("model: expert unavailable")

// ExpertRunner computes the routed experts of one layer. The local
// implementation runs them in process; the cluster sends each group to the
// actor hosting that expert. Implementations may run groups concurrently but
// must fill every group's Out (or return an error) before returning, and must
// not keep the slices after returning. RunExperts blocks; it should give up
// when ctx is done.
type ExpertRunner interface {
	RunExperts(ctx context.Context, layer int, groups []ExpertGroup) error
}

// ExpertScratch holds the intermediate activations of an expert call,
// kept between calls (of any expert) so that steady-state calls do not
// allocate. One goroutine uses it at a time.
type ExpertScratch struct {
	gate, up []float32
	mm, mmUp kernels.Scratch
	alone    ExpertBatch // Forward's
	call     [1]ExpertCall
}

// Forward computes out = Down(silu(Gate·in) ⊙ Up·in) for rows input rows of
// Cols(Gate) floats each; out holds rows × Rows(Down) floats. Each output row
// depends only on its input row, whatever else is in the batch. It is an
// ExpertBatch of one call (Gate and Up share one packing of in).
func (e *Expert) Forward(p *kernels.Pool, s *ExpertScratch, in []float32, rows int, out []float32) {
	s.call[0] = ExpertCall{FFN: e, S: s, In: in, Rows: rows, Out: out}
	s.alone.Forward(p, s.call[:])
	s.call[0] = ExpertCall{}
}

// ExpertCall is one expert's share of an ExpertBatch: Out = FFN(In) for Rows
// rows, with its own scratch.
type ExpertCall struct {
	FFN  *Expert
	S    *ExpertScratch
	In   []float32
	Rows int
	Out  []float32
}

// ExpertBatch computes several experts' forward passes together: the Gate
// and Up products of every call as one kernels.MatMulBatch, SwiGLU, then
// every Down product as a second. A decode step gives each routed expert a
// handful of rows, so one expert's products are short; fused, the pool's
// threads stay on the weights instead of meeting at six joins per expert.
// Each output row is bit-identical to Expert.Forward's. The zero value is
// ready to use and steady-state calls do not allocate; one goroutine uses
// it at a time.
type ExpertBatch struct {
	mm   kernels.MatMulBatch
	jobs []kernels.MatMulJob

	// SwiGLU over the calls' rows, spread over the pool in pieces.
	self     *ExpertBatch // detects a copied batch, whose swigluFn would point at the original
	calls    []ExpertCall
	pieces   []swigluPiece
	swigluFn func(lo, hi int)
}

// swigluPiece is a run of one call's gate (and up) elements.
type swigluPiece struct{ call, lo, hi int }

// swigluPieceLen is the elements of a SwiGLU piece (a multiple of 8, the
// SIMD width): a few microseconds of work, so that a decode step's experts
// (tens of rows) or a prefill's (hundreds) spread over every thread instead
// of running on the caller while the pool waits.
const swigluPieceLen = 4096

// Forward runs calls on p. Calls must not share a scratch.
func (b *ExpertBatch) Forward(p *kernels.Pool, calls []ExpertCall) {
	b.jobs = b.jobs[:0]
	for i := range calls {
		c := &calls[i]
		ffn := c.FFN.Gate.Rows
		c.S.gate = grow(c.S.gate, c.Rows*ffn)
		c.S.up = grow(c.S.up, c.Rows*ffn)
		b.jobs = append(b.jobs,
			kernels.MatMulJob{S: &c.S.mm, M: c.FFN.Gate, X: c.In, NRows: c.Rows, Out: c.S.gate},
			kernels.MatMulJob{S: &c.S.mmUp, M: c.FFN.Up, X: c.In, NRows: c.Rows, Out: c.S.up})
	}
	b.mm.Run(p, b.jobs)
	b.swiglu(p, calls)
	b.jobs = b.jobs[:0]
	for i := range calls {
		c := &calls[i]
		b.jobs = append(b.jobs, kernels.MatMulJob{S: &c.S.mm, M: c.FFN.Down, X: c.S.gate, NRows: c.Rows, Out: c.Out})
	}
	b.mm.Run(p, b.jobs)
	clear(b.jobs) // pin no caller memory
	b.jobs = b.jobs[:0]
}

// swiglu sets every call's gate to SwiGLU(gate, up), in pieces over p.
func (b *ExpertBatch) swiglu(p *kernels.Pool, calls []ExpertCall) {
	b.pieces = b.pieces[:0]
	for i := range calls {
		n := len(calls[i].S.gate)
		for lo := 0; lo < n; lo += swigluPieceLen {
			b.pieces = append(b.pieces, swigluPiece{i, lo, min(lo+swigluPieceLen, n)})
		}
	}
	if p == nil || len(b.pieces) < 2 {
		for _, c := range calls {
			kernels.SwiGLU(c.S.gate, c.S.gate, c.S.up)
		}
		return
	}
	if b.self != b {
		b.self = b
		b.swigluFn = b.swigluPieces
	}
	b.calls = calls
	p.Run(len(b.pieces), b.swigluFn)
	b.calls = nil
}

// swigluPieces computes pieces [lo, hi) of the current swiglu.
func (b *ExpertBatch) swigluPieces(lo, hi int) {
	for _, pc := range b.pieces[lo:hi] {
		s := b.calls[pc.call].S
		kernels.SwiGLU(s.gate[pc.lo:pc.hi], s.gate[pc.lo:pc.hi], s.up[pc.lo:pc.hi])
	}
}

// LocalExperts runs every expert of a Weights in this process: a layer's
// groups as one ExpertBatch spread over the pool.
type LocalExperts struct {
	W       *Weights
	Pool    *kernels.Pool
	scratch ExpertScratch   // the dense FFN's
	groups  []ExpertScratch // one per group of a layer
	calls   []ExpertCall
	batch   ExpertBatch
}

// RunExperts implements ExpertRunner.
func (l *LocalExperts) RunExperts(ctx context.Context, layer int, groups []ExpertGroup) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(l.groups) < len(groups) {
		l.groups = append(l.groups, make([]ExpertScratch, len(groups)-len(l.groups))...)
	}
	l.calls = l.calls[:0]
	for i, g := range groups {
		l.calls = append(l.calls, ExpertCall{FFN: l.W.FeedForward(layer, g.Expert), S: &l.groups[i], In: g.In, Rows: len(g.Rows), Out: g.Out})
	}
	l.batch.Forward(l.Pool, l.calls)
	clear(l.calls)
	return nil
}

func grow(b []float32, n int) []float32 { return kernels.GrowFloats(b, n) }
