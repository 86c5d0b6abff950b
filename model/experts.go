package model

import (
	"context"

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

// ExpertRunner computes the routed experts of one layer. The local
// implementation runs them in process; the cluster sends each group to the
// actor hosting that expert. Implementations may run groups concurrently but
// must fill every group's Out (or return an error) before returning, and must
// not keep the slices after returning. RunExperts blocks; it should give up
// when ctx is done.
type ExpertRunner interface {
	RunExperts(ctx context.Context, layer int, groups []ExpertGroup) error
}

// ExpertScratch holds an expert's intermediate activations between calls so
// that steady-state calls do not allocate. One goroutine uses it at a time.
type ExpertScratch struct {
	gate, up []float32
	mm       kernels.Scratch
}

// Forward computes out = Down(silu(Gate·in) ⊙ Up·in) for rows input rows of
// Cols(Gate) floats each; out holds rows × Rows(Down) floats. Each output row
// depends only on its input row, whatever else is in the batch.
func (e *Expert) Forward(p *kernels.Pool, s *ExpertScratch, in []float32, rows int, out []float32) {
	ffn := e.Gate.Rows
	s.gate = grow(s.gate, rows*ffn)
	s.up = grow(s.up, rows*ffn)
	kernels.MatMul(p, &s.mm, e.Gate, in, rows, s.gate)
	kernels.MatMul(p, &s.mm, e.Up, in, rows, s.up)
	kernels.SwiGLU(s.gate, s.gate, s.up)
	kernels.MatMul(p, &s.mm, e.Down, s.gate, rows, out)
}

// LocalExperts runs every expert of a Weights in this process, one group
// after another in ascending expert order, each spread over the pool.
type LocalExperts struct {
	W       *Weights
	Pool    *kernels.Pool
	scratch ExpertScratch
}

// RunExperts implements ExpertRunner.
func (l *LocalExperts) RunExperts(ctx context.Context, layer int, groups []ExpertGroup) error {
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			return err
		}
		l.W.FeedForward(layer, g.Expert).Forward(l.Pool, &l.scratch, g.In, len(g.Rows), g.Out)
	}
	return nil
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}
