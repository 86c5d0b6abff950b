package model

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/kvcache"
)

// ErrBadBatch is wrapped by errors about a batch the runner cannot run.
var ErrBadBatch = errors.New("model: bad batch")

// Batch is a set of tokens to run through the model in one forward pass.
// Row i is token Tokens[i] of sequence Seqs[i] at position Pos[i]. Rows of
// one sequence must come in ascending, gap-free position order continuing
// from what its cache holds. Rows of different sequences are independent.
type Batch struct {
	Tokens []int32
	Pos    []int32
	Seqs   []*kvcache.Cache
	// Logits marks the rows whose logits are wanted; nil means the last row.
	Logits []bool
}

// Len is the number of rows.
func (b *Batch) Len() int { return len(b.Tokens) }

// Runner holds the buffers for forward passes of up to MaxRows rows, reserved
// once so that steady-state passes do not allocate. One goroutine uses a
// Runner at a time.
type Runner struct {
	W       *Weights
	Pool    *kernels.Pool
	MaxRows int

	x, xn, q, k, v, att, proj []float32
	gateLogits                []float32
	ropeCos, ropeSin          []float32 // rows × RopeDim/2
	logits                    []float32
	route                     Routing
	groups                    []ExpertGroup
	groupRows, slot           []int32
	expIn, expOut             []float32 // Rows×TopK × Dim
	attnScratch               [][]float32
	attnFn                    func(lo, hi int) // bound once so Pool.Run does not allocate
	attnRuns                  []attnRun
	attnRowsMax               int
	attnLayer                 int
	attnBatch                 *Batch
	mm                        kernels.Scratch
	mmK, mmV                  kernels.Scratch
	qkv                       kernels.MatMulBatch
	qkvJobs                   [3]kernels.MatMulJob
	local                     LocalExperts

	// Per-row steps, over the pool when the batch is wide (see perRows);
	// the norms read their weights from normW (nil: unweighted, as
	// kernels.RMSNorm), a residual add normalises after itself when
	// normAfter is set, RoPE and the stores read the layer and batch from
	// attnLayer and attnBatch, the combination the routing.
	normFn, ropeStoreFn, addNormFn, combineFn, gatherFn func(lo, hi int)
	normW                                               []float32
	normAfter                                           bool

	ctx int // positions the attention scratch holds (≤ W.Ctx)

	// Phases, when set, receives each phase's wall time of every forward
	// pass (Forward, ForwardHidden): a clock read per phase and layer,
	// about 5 µs a pass at 8 layers. Nil costs nothing.
	Phases *PhaseTimes
}

// NewRunner reserves buffers for batches of up to maxRows rows at any
// position of the model's context.
func NewRunner(w *Weights, pool *kernels.Pool, maxRows int) *Runner {
	return NewRunnerCtx(w, pool, maxRows, w.Ctx)
}

// NewRunnerCtx is NewRunner for positions below ctx (at most the model's
// context): attention's scratch grows with the context, and a server runs
// a shorter one than a model may claim.
func NewRunnerCtx(w *Weights, pool *kernels.Pool, maxRows, ctx int) *Runner {
	c := w.Config
	if ctx <= 0 || ctx > c.Ctx {
		ctx = c.Ctx
	}
	c.Ctx = ctx
	r := &Runner{W: w, Pool: pool, MaxRows: maxRows, ctx: ctx}
	r.x = make([]float32, maxRows*c.Dim)
	r.xn = make([]float32, maxRows*c.Dim)
	r.q = make([]float32, maxRows*c.QDim())
	r.k = make([]float32, maxRows*c.KVDim())
	r.v = make([]float32, maxRows*c.KVDim())
	r.att = make([]float32, maxRows*c.QDim())
	r.proj = make([]float32, maxRows*c.Dim)
	r.ropeCos = make([]float32, maxRows*c.RopeDim/2)
	r.ropeSin = make([]float32, maxRows*c.RopeDim/2)
	k := max(c.TopK, 1)
	r.gateLogits = make([]float32, maxRows*max(c.Experts, 1))
	r.groupRows = make([]int32, maxRows*k)
	r.slot = make([]int32, maxRows*k)
	r.groups = make([]ExpertGroup, 0, max(c.Experts, 1))
	r.expIn = make([]float32, maxRows*k*c.Dim)
	r.expOut = make([]float32, maxRows*k*c.Dim)
	r.attnRowsMax = attnRowsMax(c)
	r.attnRuns = make([]attnRun, 0, maxRows)
	r.attnScratch = make([][]float32, pool.Threads())
	for i := range r.attnScratch {
		r.attnScratch[i] = make([]float32, attnScratchLen(c, c.Ctx))
	}
	r.local = LocalExperts{W: w, Pool: pool}
	r.attnFn = r.attendTasks
	r.normFn, r.ropeStoreFn, r.addNormFn, r.combineFn = r.normRows, r.ropeStoreRows, r.addNormRows, r.combineRows
	r.gatherFn = r.gatherRows
	return r
}

// attnRowsMax is how many rows of a run go through the attention kernels
// together: up to 8 query vectors (attendRun).
func attnRowsMax(c Config) int { return max(1, 8/(c.Heads/c.KVHeads)) }

// attnScratchLen is the floats of one thread's attention scratch for
// positions below ctx: scores, queries, staging (and a run's outputs).
// Config.Validate bounds it for the model's whole context.
func attnScratchLen(c Config, ctx int) int {
	group := c.Heads / c.KVHeads
	nv := attnRowsMax(c) * group
	return max(group*(2*ctx+c.HeadDim)+c.HeadDim, nv*(2*ctx+2*c.HeadDim))
}

// StepBytes estimates the memory of the buffers a forward pass of rows
// rows fills, on a pool of threads threads, with context ctx: the runner's
// activations, the quantized copies of its products' inputs (Q8_0 and the
// VNNI packing), attention's scratch, and the routed experts'
// intermediates for rows × TopK expert rows, as if this node computed
// every expert, counted twice: each group position of a layer keeps its
// scratch at the largest call it served in any layer (rows spread
// unevenly over the experts) and grows by a quarter (kernels.GrowFloats).
// Measured on the bench preset (512 rows, 2 threads): 88.8 MiB resident
// after 64 requests, against 103 MiB estimated. A server counts it beside
// its KV cache against a memory limit.
func StepBytes(c Config, rows, threads, ctx int) int64 {
	const f = 4
	r, k := int64(rows), int64(max(c.TopK, 1))
	dim, qd, kvd := int64(c.Dim), int64(c.QDim()), int64(c.KVDim())
	q := func(cols int64) int64 { return cols / 32 * (34 + 64) }
	b := r * f * (3*dim + 2*qd + 2*kvd) // x, xn, proj, q, att, k, v
	b += r * (q(dim) + q(qd))           // Q/K/V's input, Wo's
	b += 2 * r * k * dim * f            // the experts' inputs and outputs
	b += r * int64(max(c.Experts, 1)) * f
	b += int64(threads) * int64(attnScratchLen(c, ctx)) * f
	ffn := int64(c.FFN)
	er := r
	if c.Experts > 0 {
		er = r * k
	}
	b += er * (2*ffn*f + q(dim) + q(ffn)) * 2
	return b
}

// parallelRows is the fewest rows a per-row step (norms, RoPE and the
// cache stores, the experts' combination) spreads over the pool; below it
// the step takes less than a fork and join.
const parallelRows = 8

// perRows runs fn over rows [0, n): across the pool for wide batches (a
// prefill chunk, many decoding streams), where these steps would otherwise
// run on one thread while the rest wait.
func (r *Runner) perRows(n int, fn func(lo, hi int)) {
	if n < parallelRows || r.Pool.Threads() == 1 {
		fn(0, n)
		return
	}
	r.Pool.Run(n, fn)
}

// normRows sets xn = rmsnorm(x)·normW for rows [lo, hi).
func (r *Runner) normRows(lo, hi int) {
	dim := r.W.Dim
	kernels.RMSNormRows(r.xn[lo*dim:hi*dim], r.x[lo*dim:hi*dim], hi-lo, dim, r.normW, r.W.NormEps)
}

// addNormRows adds proj (the attention's output projection, or a dense
// FFN's output) into x for rows [lo, hi) and, when normAfter is set, sets xn
// to the next norm of the result: the residual add and the norm after it
// in one pass over the rows.
func (r *Runner) addNormRows(lo, hi int) {
	dim := r.W.Dim
	x, p := r.x[lo*dim:hi*dim], r.proj[lo*dim:hi*dim]
	for i := range x {
		x[i] += p[i]
	}
	if r.normAfter {
		r.normRows(lo, hi)
	}
}

// ropeStoreRows rotates the queries and keys of rows [lo, hi) and stores
// their keys and values in their sequences' caches (each row its own
// position, so rows never write the same memory).
func (r *Runner) ropeStoreRows(lo, hi int) {
	w, b, l := r.W, r.attnBatch, r.attnLayer
	qd, kvd, half := w.QDim(), w.KVDim(), w.RopeDim/2
	for i := lo; i < hi; i++ {
		cs, sn := r.ropeCos[i*half:(i+1)*half], r.ropeSin[i*half:(i+1)*half]
		for h := 0; h < w.Heads; h++ {
			rope(r.q[i*qd+h*w.HeadDim:], cs, sn)
		}
		for h := 0; h < w.KVHeads; h++ {
			rope(r.k[i*kvd+h*w.HeadDim:], cs, sn)
		}
		b.Seqs[i].Store(l, int(b.Pos[i]), r.k[i*kvd:(i+1)*kvd], r.v[i*kvd:(i+1)*kvd])
	}
}

// combineRows adds to x, for rows [lo, hi), the routed experts' outputs
// weighted by their gate weights, in routing order.
func (r *Runner) combineRows(lo, hi int) {
	dim, k := r.W.Dim, r.W.TopK
	for i := lo; i < hi; i++ {
		acc := r.proj[i*dim : (i+1)*dim]
		for j := 0; j < k; j++ {
			wt := r.route.Weights[i*k+j]
			o := r.expOut[int(r.slot[i*k+j])*dim:][:dim]
			if j == 0 {
				for d := range acc {
					acc[d] = o[d] * wt
				}
				continue
			}
			for d := range acc {
				acc[d] += o[d] * wt
			}
		}
		x := r.x[i*dim : (i+1)*dim]
		for d := range x {
			x[d] += acc[d]
		}
	}
	if r.normAfter {
		r.normRows(lo, hi)
	}
}

// Local returns an ExpertRunner that runs the experts in this process.
func (r *Runner) Local() ExpertRunner { return &r.local }

// Validate checks a batch against the runner and the sequences' caches.
func (r *Runner) Validate(b *Batch) error {
	n := b.Len()
	if n == 0 || n > r.MaxRows {
		return fmt.Errorf("%w: %d rows, want 1..%d", ErrBadBatch, n, r.MaxRows)
	}
	if len(b.Pos) != n || len(b.Seqs) != n || (b.Logits != nil && len(b.Logits) != n) {
		return fmt.Errorf("%w: tokens, positions, sequences and logits flags differ in length", ErrBadBatch)
	}
	for i := 0; i < n; i++ {
		if t := b.Tokens[i]; t < 0 || int(t) >= r.W.Vocab {
			return fmt.Errorf("%w: row %d: token %d outside vocabulary of %d", ErrBadBatch, i, t, r.W.Vocab)
		}
		s := b.Seqs[i]
		if s == nil {
			return fmt.Errorf("%w: row %d has no sequence", ErrBadBatch, i)
		}
		cfg := s.Config()
		if cfg.Layers != r.W.Layers || cfg.KVDim != r.W.KVDim() || s.HeadDim()%r.W.HeadDim != 0 {
			return fmt.Errorf("%w: row %d: cache shape %d layers × %d (heads of %d) does not fit the model", ErrBadBatch, i, cfg.Layers, cfg.KVDim, s.HeadDim())
		}
		if p := int(b.Pos[i]); p < 0 || p >= min(cfg.Ctx, r.ctx) {
			return fmt.Errorf("%w: row %d: position %d outside context %d", kvcache.ErrFull, i, p, min(cfg.Ctx, r.ctx))
		}
	}
	// Gap-free, strictly ascending positions per sequence.
	for i := 0; i < n; i++ {
		want := b.Seqs[i].Len()
		for j := i - 1; j >= 0; j-- {
			if b.Seqs[j] == b.Seqs[i] {
				want = int(b.Pos[j]) + 1
				break
			}
		}
		prev := -1
		for j := i - 1; j >= 0; j-- {
			if b.Seqs[j] == b.Seqs[i] {
				prev = j
				break
			}
		}
		switch {
		case int(b.Pos[i]) > want:
			return fmt.Errorf("%w: row %d: position %d leaves a gap (next free position is %d)", ErrBadBatch, i, b.Pos[i], want)
		case prev >= 0 && int(b.Pos[i]) != want:
			return fmt.Errorf("%w: row %d: position %d does not follow row %d's position %d", ErrBadBatch, i, b.Pos[i], prev, b.Pos[prev])
		}
	}
	return nil
}

// Forward runs the batch through the model, writing keys and values into the
// sequences' caches, and returns the logits of the rows b.Logits marks, in
// row order (len = marked rows × Vocab). The slice is owned by the runner
// and valid until the next call. experts computes the routed experts; nil
// means in process.
func (r *Runner) Forward(ctx context.Context, b *Batch, experts ExpertRunner) ([]float32, error) {
	if err := r.forward(ctx, b, experts); err != nil {
		return nil, err
	}
	return r.Logits(b), nil
}

// ForwardHidden runs the batch like Forward but returns, instead of logits,
// every row's final hidden state after the output norm (rows × Dim, owned by
// the runner and valid until the next call): the input of the output
// projection, which embeddings pool.
func (r *Runner) ForwardHidden(ctx context.Context, b *Batch, experts ExpertRunner) ([]float32, error) {
	if err := r.forward(ctx, b, experts); err != nil {
		return nil, err
	}
	t := r.clock()
	w, n, dim := r.W, b.Len(), r.W.Dim
	for i := 0; i < n; i++ {
		kernels.RMSNorm(r.xn[i*dim:(i+1)*dim], r.x[i*dim:(i+1)*dim], w.OutputNorm, w.NormEps)
	}
	r.lap(PhaseLogits, t)
	return r.xn[:n*dim], nil
}

// forward runs every layer of the batch, leaving the hidden states in x.
func (r *Runner) forward(ctx context.Context, b *Batch, experts ExpertRunner) error {
	if err := r.Validate(b); err != nil {
		return err
	}
	if experts == nil {
		experts = &r.local
	}
	w, n := r.W, b.Len()
	for i := 0; i < n; i++ {
		if p := int(b.Pos[i]); p < b.Seqs[i].Len() {
			b.Seqs[i].Truncate(p) // rewriting a position forgets what followed it
		}
		if err := b.Seqs[i].Reserve(int(b.Pos[i])); err != nil {
			return err
		}
	}
	t0 := r.clock()
	// x[i] = token_embd[token i]
	for i, t := range b.Tokens {
		if err := kernels.Dequantize(w.TokEmbd.Type, w.TokEmbd.Row(int(t)), r.x[i*w.Dim:(i+1)*w.Dim]); err != nil {
			return err
		}
	}
	r.ropeTables(b)
	r.planAttnRuns(b) // the same runs in every layer
	r.lap(PhaseEmbed, t0)
	// Each residual add and the norm after it run as one pass over the
	// rows (addNormRows, combineRows), so the layers' norms after the first
	// come with the add before them.
	t := r.clock()
	r.normW = w.Blocks[0].AttnNorm
	r.perRows(n, r.normFn)
	r.lap(PhaseAttnNorm, t)
	for l := range w.Blocks {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.attention(l, b)
		if err := r.ffn(ctx, l, n, experts); err != nil {
			return fmt.Errorf("layer %d: %w", l, err)
		}
	}
	r.normW, r.normAfter = nil, false
	return nil
}

// attention runs the attention half of layer l for the batch, whose xn
// holds rmsnorm(x)·attn_norm: x += Wo · attn(rope(Wq·xn), rope(Wk·xn),
// Wv·xn), storing this batch's keys and values in the caches, then xn =
// rmsnorm(x)·ffn_norm for the feed-forward half. The forward pass prepares
// the batch's RoPE angles and attention runs first.
func (r *Runner) attention(l int, b *Batch) {
	w, n, L := r.W, b.Len(), &r.W.Blocks[l]
	dim, qd, kvd := w.Dim, w.QDim(), w.KVDim()
	r.attnLayer, r.attnBatch = l, b
	t := r.clock()
	// Q, K and V in one batch: one packing of xn, two pool joins.
	r.qkvJobs = [3]kernels.MatMulJob{
		{S: &r.mm, M: L.Wq, X: r.xn, NRows: n, Out: r.q[:n*qd]},
		{S: &r.mmK, M: L.Wk, X: r.xn, NRows: n, Out: r.k[:n*kvd]},
		{S: &r.mmV, M: L.Wv, X: r.xn, NRows: n, Out: r.v[:n*kvd]},
	}
	r.qkv.Run(r.Pool, r.qkvJobs[:])
	r.qkvJobs = [3]kernels.MatMulJob{}
	t = r.lap(PhaseQKV, t)
	r.perRows(n, r.ropeStoreFn)
	t = r.lap(PhaseRoPE, t)
	r.Pool.Run(len(r.attnScratch), r.attnFn)
	r.attnBatch = nil
	t = r.lap(PhaseAttention, t)
	kernels.MatMul(r.Pool, &r.mm, L.Wo, r.att, n, r.proj[:n*dim])
	t = r.lap(PhaseAttnOut, t)
	r.normW, r.normAfter = L.FFNNorm, true
	r.perRows(n, r.addNormFn) // x += proj; xn = rmsnorm(x)·ffn_norm
	r.lap(PhaseFFNNorm, t)
}

// ffn runs the feed-forward half of layer l for the first n rows of x,
// whose xn holds rmsnorm(x)·ffn_norm: x += Σ_k w_k · expert_k(xn), over the
// routed experts in ascending expert order (or the dense FFN), then xn =
// rmsnorm(x)·attn_norm of the next layer, if there is one.
func (r *Runner) ffn(ctx context.Context, l, n int, experts ExpertRunner) error {
	w, L := r.W, &r.W.Blocks[l]
	dim := w.Dim
	r.normW, r.normAfter = nil, l+1 < len(w.Blocks)
	if r.normAfter {
		r.normW = w.Blocks[l+1].AttnNorm
	}
	t := r.clock()
	if L.Dense != nil {
		L.Dense.Forward(r.Pool, &r.local.scratch, r.xn[:n*dim], n, r.proj[:n*dim])
		t = r.lap(PhaseExperts, t) // a dense FFN's products count as the experts'
		r.perRows(n, r.addNormFn)
		r.lap(PhaseCombine, t)
		return nil
	}
	kernels.MatMul(r.Pool, &r.mm, L.GateInp, r.xn, n, r.gateLogits[:n*w.Experts])
	Route(&r.route, r.gateLogits, n, w.Experts, w.TopK, w.NormTopKW)
	r.groups = Plan(&r.route, w.Experts, r.groups, r.groupRows, r.slot)
	off := 0
	for g := range r.groups {
		grp := &r.groups[g]
		m := len(grp.Rows)
		grp.In = r.expIn[off*dim : (off+m)*dim]
		grp.Out = r.expOut[off*dim : (off+m)*dim]
		off += m
	}
	r.perRows(off, r.gatherFn) // each group's rows of xn into its In
	t = r.lap(PhaseRoute, t)
	err := experts.RunExperts(ctx, l, r.groups)
	t = r.lap(PhaseExperts, t) // a failed call's time too (a peer's timeout)
	if err != nil {
		return err
	}
	r.perRows(n, r.combineFn) // x += Σ w·out; xn = rmsnorm(x)·attn_norm of l+1
	r.lap(PhaseCombine, t)
	return nil
}

// gatherRows copies expert rows [lo, hi) (the groups' rows in group order,
// as expIn holds them) from xn.
func (r *Runner) gatherRows(lo, hi int) {
	dim := r.W.Dim
	g, start := 0, 0
	for start+len(r.groups[g].Rows) <= lo {
		start += len(r.groups[g].Rows)
		g++
	}
	for i := lo; i < hi; i++ {
		for i-start >= len(r.groups[g].Rows) {
			start += len(r.groups[g].Rows)
			g++
		}
		row := int(r.groups[g].Rows[i-start])
		copy(r.expIn[i*dim:(i+1)*dim], r.xn[row*dim:(row+1)*dim])
	}
}

// Logits applies the final norm and output projection to the rows b marks.
func (r *Runner) Logits(b *Batch) []float32 {
	t := r.clock()
	defer r.lap(PhaseLogits, t)
	w, n, dim := r.W, b.Len(), r.W.Dim
	m := 0
	for i := 0; i < n; i++ {
		if (b.Logits == nil && i == n-1) || (b.Logits != nil && b.Logits[i]) {
			kernels.RMSNorm(r.xn[m*dim:(m+1)*dim], r.x[i*dim:(i+1)*dim], w.OutputNorm, w.NormEps)
			m++
		}
	}
	if cap(r.logits) < m*w.Vocab {
		r.logits = make([]float32, m*w.Vocab)
	}
	out := r.logits[:m*w.Vocab]
	kernels.MatMul(r.Pool, &r.mm, w.Output, r.xn, m, out)
	return out
}

// ropeTables fills the cos/sin of every row's position: θ_i = pos·base^(-2i/d),
// computed by repeated multiplication in float32 as ggml does.
func (r *Runner) ropeTables(b *Batch) {
	w := r.W
	half := w.RopeDim / 2
	exp := float32(-2) / float32(w.RopeDim)
	thetaScale := float32(math.Pow(float64(w.RopeBase), float64(exp)))
	for i, p := range b.Pos {
		theta := float32(p)
		for j := 0; j < half; j++ {
			r.ropeCos[i*half+j] = float32(math.Cos(float64(theta)))
			r.ropeSin[i*half+j] = float32(math.Sin(float64(theta)))
			theta *= thetaScale
		}
	}
}

// rope rotates adjacent pairs (x[2j], x[2j+1]) of one head by θ_j (the
// "normal" rotation llama uses; GGUF stores Wq and Wk permuted for it).
func rope(x []float32, cs, sn []float32) {
	for j := range cs {
		x0, x1 := x[2*j], x[2*j+1]
		x[2*j] = x0*cs[j] - x1*sn[j]
		x[2*j+1] = x0*sn[j] + x1*cs[j]
	}
}
