package kernels

// MatMulJob is one product of a MatMulBatch: Out = M·X for NRows activation
// rows, exactly as MatMul(p, S, M, X, NRows, Out) computes it. Each job needs
// its own Scratch.
type MatMulJob struct {
	S     *Scratch
	M     Matrix
	X     []float32
	NRows int
	Out   []float32
}

// MatMulBatch runs independent matrix products (the experts of one layer,
// say) as one unit of pool work: where every job takes the VNNI row kernels,
// all jobs' activation rows are packed in one Pool.Run and all their weight
// tiles computed in a second, instead of two Runs per product. A decode step
// of a MoE model makes hundreds of small products (three per routed expert
// per layer); each Run is a fork and a join whose last piece leaves the other
// threads idle, so fusing them keeps the cores on the weights.
//
// Jobs with the same input (the same X, rows and columns: an expert's Gate
// and Up, attention's Q, K and V) share one packing of it.
//
// Every output is bit-identical to MatMul's (the same kernels compute every
// element). Jobs on other paths run one after another through MatMul. The
// zero value is ready to use; Run does not allocate in steady state. A
// MatMulBatch must not be used by two Runs at once.
type MatMulBatch struct {
	jobs    []MatMulJob // the jobs of the Run in progress on the fused path
	packs   []int       // indexes into jobs of those that pack their rows
	rowEnd  []int       // rowEnd[k]: activation rows of packs[:k+1]
	tileEnd []int       // tileEnd[k]: (chunk, tile) items of jobs[:k+1] (Scratch.rowItemCount)
	own     []borrowed  // jobs reading another job's packed rows
	packFn  func(lo, hi int)
	tilesFn func(lo, hi int)
	self    *MatMulBatch
}

// borrowed is a job's own packed-row buffers, put back after a Run in which
// it read another job's.
type borrowed struct {
	s       *Scratch
	act, ra []byte
}

// Run computes every job. Jobs must not share a Scratch, and no job's Out
// may overlap another job's X or Out.
func (b *MatMulBatch) Run(p *Pool, jobs []MatMulJob) {
	if b.self != b {
		b.self = b
		b.packFn = b.pack
		b.tilesFn = b.tiles
	}
	b.jobs, b.packs, b.rowEnd, b.tileEnd = b.jobs[:0], b.packs[:0], b.rowEnd[:0], b.tileEnd[:0]
	rows, tiles, vals := 0, 0, 0
	for _, j := range jobs {
		if !simdQ8(j.M) {
			MatMul(p, j.S, j.M, j.X, j.NRows, j.Out)
			continue
		}
		s := j.S
		if !s.begin(j.M, j.X, j.NRows, j.Out) {
			continue
		}
		if !s.rowVNNI() {
			s.matMulSIMDQ8(p)
			s.end()
			continue
		}
		tiles += s.rowItemCount()
		b.jobs = append(b.jobs, j)
		b.tileEnd = append(b.tileEnd, tiles)
		if src := b.samePacking(j); src != nil {
			src.needAct = src.needAct || s.needAct // j's tail rows read the Q8_0 rows too
			b.own = append(b.own, borrowed{s, s.act, s.ra})
			s.act, s.ra = src.act, src.ra
			continue
		}
		rows += s.nrows
		vals += s.nrows * s.m.Cols
		b.packs = append(b.packs, len(b.jobs)-1)
		b.rowEnd = append(b.rowEnd, rows)
	}
	if len(b.jobs) > 0 {
		if p == nil || vals <= inlinePack {
			b.pack(0, rows) // little work: less than a fork and join
		} else {
			p.Run(rows, b.packFn)
		}
		if p == nil {
			b.tiles(0, tiles)
		} else {
			// Guided: the jobs' tiles differ in cost (an expert with
			// eight rows against one with one), so equal pieces could
			// leave a thread idle for most of one at the end.
			p.RunGuided(tiles, b.tilesFn)
		}
	}
	for _, o := range b.own {
		o.s.act, o.s.ra = o.act, o.ra
	}
	clear(b.own)
	b.own = b.own[:0]
	for i := range b.jobs {
		b.jobs[i].S.end()
		b.jobs[i] = MatMulJob{}
	}
	b.jobs = b.jobs[:0]
}

// samePacking returns the scratch of an earlier job of this Run that packs
// the same activation rows as j, or nil.
func (b *MatMulBatch) samePacking(j MatMulJob) *Scratch {
	for _, k := range b.packs {
		p := b.jobs[k]
		if p.NRows == j.NRows && p.M.Cols == j.M.Cols && p.M.Type.VecDotType() == j.M.Type.VecDotType() &&
			len(p.X) > 0 && len(j.X) > 0 && &p.X[0] == &j.X[0] {
			return p.S
		}
	}
	return nil
}

// pack packs activation rows [lo, hi) of the concatenated packing jobs.
func (b *MatMulBatch) pack(lo, hi int) {
	spans(b.rowEnd, lo, hi, func(k, lo, hi int) { b.jobs[b.packs[k]].S.quantPackRows(lo, hi) })
}

// tiles computes items [lo, hi) of the concatenated jobs: each job's
// (activation chunk, weight tile) pairs, Scratch.rowItems.
func (b *MatMulBatch) tiles(lo, hi int) {
	spans(b.tileEnd, lo, hi, func(k, lo, hi int) { b.jobs[k].S.rowItems(lo, hi) })
}

// spans calls fn(k, lo_k, hi_k) for each job k whose items (job k owns
// [end[k-1], end[k]) of the concatenation) meet [lo, hi), with lo_k and hi_k
// local to job k.
func spans(end []int, lo, hi int, fn func(k, lo, hi int)) {
	k := 0
	for end[k] <= lo {
		k++
	}
	for ; k < len(end) && lo < hi; k++ {
		start := 0
		if k > 0 {
			start = end[k-1]
		}
		if e := min(hi, end[k]); e > lo {
			fn(k, lo-start, e-start)
			lo = e
		}
	}
}
