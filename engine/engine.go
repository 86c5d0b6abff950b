package engine

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/sample"
)

// MaxTopLogprobs is the most alternatives a request may ask for per token.
const MaxTopLogprobs = 20

// Engine schedules generations for one model on one node. Submit, Embed,
// Stats and Close are safe for concurrent use; everything else belongs to
// the scheduler goroutine.
type Engine struct {
	cfg    Config
	w      *model.Weights
	isEOG  func(int32) bool
	ctxLen int

	submitMu sync.RWMutex // held for reading while a Submit sends; Close takes it to stop sends
	closed   bool
	submitCh chan *seq
	embedCh  chan *embedJob
	quit     chan struct{}
	done     chan struct{}
	once     sync.Once
	queued   atomic.Int64 // requests submitted and not yet admitted (or finished)
	stale    atomic.Bool  // the weights changed: empty the prefix cache before the next step

	statsMu sync.Mutex
	stats   Stats

	// Owned by the scheduler goroutine.
	runner   *model.Runner
	experts  model.ExpertRunner // nil: the runner's in-process experts
	weights  func() uint64      // WithWeightsVersion; nil: the weights never change
	weightsV uint64             // its last value
	kv       *kvcache.Pool
	waiting  []*seq // admission order: preempted sequences go back to the front
	running  []*seq // admission order
	finished []*seq // finished in this step; their Done events go out after stats
	admitted int64
	pending  []int
	spans    []span
	batch    model.Batch
	pool     *kernels.Pool
	draws    []draw           // this step's sampled tokens, one per emitting sequence
	scratch  [][]float32      // per draw: a copy of its logits for log-probabilities
	sampleFn func(lo, hi int) // e.sampleDraws, bound once
	counters Stats
	phases   model.PhaseTimes // the runner's, since New (runner.Phases points here)
}

// draw is one sequence's sampled token of a step. Draws are independent
// (each sequence has its own sampler), so a step's draws run in parallel.
type draw struct {
	s       *seq
	logits  []float32
	tok     int32
	logprob float32
	top     []TokenLogprob
}

// seq is one request's state in the scheduler.
type seq struct {
	req       Request
	ctx       context.Context
	events    chan Event
	submitted time.Time
	ttft      time.Duration
	sampler   *sample.Sampler

	tokens    []int32 // prompt + generated; the cache holds a prefix of it
	generated int
	cache     *kvcache.Cache
	cached    int   // prompt tokens served from the prefix cache at first admission
	order     int64 // admission number; the highest is preempted first
	admits    int
	prefilled bool // its prompt was counted in Stats.PromptTokens
	done      bool
	finish    FinishReason
	err       error
}

type embedJob struct {
	tokens []int32
	warm   bool               // Warm's: no result, no step metrics
	runner model.ExpertRunner // Warm's experts (nil: the engine's)
	ctx    context.Context    // Warm's: cancelling it stops the step between layers
	out    chan embedResult
}

type embedResult struct {
	vec []float32
	err error
}

// New starts an engine for w on pool. isEOG reports the model's
// end-of-generation tokens (nil: none). The KV cache is allocated here.
func New(cfg Config, w *model.Weights, pool *kernels.Pool, isEOG func(int32) bool, opts ...Option) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	ctxLen := cfg.ContextLen(w)
	blocks := cfg.kvBlocks(w)
	if need := (ctxLen + cfg.BlockSize - 1) / cfg.BlockSize; blocks < need {
		return nil, fmt.Errorf("%w: %d KV blocks of %d positions cannot hold one sequence of %d positions (%d blocks, %d bytes)",
			ErrInvalidConfig, blocks, cfg.BlockSize, ctxLen, need, cfg.SequenceKVBytes(w))
	}
	kv, err := kvcache.NewPool(kvcache.PoolConfig{Layers: w.Layers, KVDim: w.KVDim(), HeadDim: w.HeadDim, Type: cfg.KVType, BlockSize: cfg.BlockSize, Blocks: blocks})
	if err != nil {
		return nil, err
	}
	if isEOG == nil {
		isEOG = func(int32) bool { return false }
	}
	e := &Engine{
		cfg:      cfg,
		w:        w,
		isEOG:    isEOG,
		ctxLen:   ctxLen,
		submitCh: make(chan *seq, cfg.MaxQueue),
		embedCh:  make(chan *embedJob),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		runner:   model.NewRunnerCtx(w, pool, cfg.MaxBatchTokens, ctxLen),
		experts:  o.experts,
		weights:  o.weights,
		kv:       kv,
		pool:     pool,
		batch: model.Batch{
			Tokens: make([]int32, 0, cfg.MaxBatchTokens),
			Pos:    make([]int32, 0, cfg.MaxBatchTokens),
			Seqs:   make([]*kvcache.Cache, 0, cfg.MaxBatchTokens),
			Logits: make([]bool, 0, cfg.MaxBatchTokens),
		},
	}
	e.counters.KVBlocksTotal = blocks
	e.stats = e.counters
	e.runner.Phases = &e.phases
	go e.loop()
	return e, nil
}

// Ctx is the most positions (prompt + generated tokens) of one sequence.
func (e *Engine) Ctx() int { return e.ctxLen }

// Submit queues a request and returns the channel its events arrive on, in
// order, ending with one Done event after which the channel is closed.
// It fails with ErrInvalidRequest or ErrContextLength for a request that can
// never run, ErrOverloaded when the queue is full, ErrClosed after Close.
// Cancelling ctx ends the generation at the next step (FinishCancel). The
// channel is buffered; a reader that falls a full buffer behind is cancelled
// (ErrSlowConsumer) instead of stalling other requests. Submit does not
// block on the scheduler.
func (e *Engine) Submit(ctx context.Context, r Request) (<-chan Event, error) {
	if err := e.validate(r); err != nil {
		return nil, err
	}
	sc := r.Sampling
	if sc.PromptLen == 0 {
		sc.PromptLen = len(r.Prompt) // the penalties count what is generated
	}
	sm, err := sample.New(sc, e.w.Vocab)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	s := &seq{
		req:       r,
		ctx:       ctx,
		events:    make(chan Event, min(r.MaxTokens, e.cfg.EventBuffer)+1),
		submitted: time.Now(),
		sampler:   sm,
		tokens:    append(make([]int32, 0, len(r.Prompt)+r.MaxTokens), r.Prompt...),
	}
	e.submitMu.RLock()
	defer e.submitMu.RUnlock()
	if e.closed {
		return nil, ErrClosed
	}
	if e.queued.Add(1) > int64(e.cfg.MaxQueue) {
		e.queued.Add(-1)
		return nil, fmt.Errorf("%w: %d requests queued", ErrOverloaded, e.cfg.MaxQueue)
	}
	e.submitCh <- s // never blocks: queued ≤ MaxQueue = cap(submitCh)
	return s.events, nil
}

func (e *Engine) validate(r Request) error {
	switch {
	case len(r.Prompt) == 0:
		return fmt.Errorf("%w: empty prompt", ErrInvalidRequest)
	case r.MaxTokens < 1:
		return fmt.Errorf("%w: MaxTokens %d < 1", ErrInvalidRequest, r.MaxTokens)
	case r.TopLogprobs < 0 || r.TopLogprobs > MaxTopLogprobs:
		return fmt.Errorf("%w: TopLogprobs %d not in [0, %d]", ErrInvalidRequest, r.TopLogprobs, MaxTopLogprobs)
	case len(r.Prompt)+r.MaxTokens > e.ctxLen:
		return fmt.Errorf("%w: %d prompt tokens + %d max tokens > context %d", ErrContextLength, len(r.Prompt), r.MaxTokens, e.ctxLen)
	}
	for i, t := range r.Prompt {
		if t < 0 || int(t) >= e.w.Vocab {
			return fmt.Errorf("%w: prompt token %d is %d, outside the vocabulary of %d", ErrInvalidRequest, i, t, e.w.Vocab)
		}
	}
	for _, t := range r.StopTokens {
		if t < 0 || int(t) >= e.w.Vocab {
			return fmt.Errorf("%w: stop token %d outside the vocabulary of %d", ErrInvalidRequest, t, e.w.Vocab)
		}
	}
	return nil
}

// Embed returns the mean over tokens of the model's final hidden states
// after the output norm (Dim floats). It runs between generation steps on
// the scheduler goroutine and blocks until done, ctx is cancelled, or the
// engine closes. ErrOverloaded means the KV cache had no room for it now.
func (e *Engine) Embed(ctx context.Context, tokens []int32) ([]float32, error) {
	if len(tokens) == 0 || len(tokens) > e.ctxLen {
		return nil, fmt.Errorf("%w: %d tokens to embed, want 1..%d", ErrInvalidRequest, len(tokens), e.ctxLen)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= e.w.Vocab {
			return nil, fmt.Errorf("%w: token %d is %d, outside the vocabulary of %d", ErrInvalidRequest, i, t, e.w.Vocab)
		}
	}
	return e.runEmbed(ctx, &embedJob{tokens: tokens, out: make(chan embedResult, 1)})
}

// Warm runs one forward pass of a full step (Config.MaxBatchTokens tokens,
// fewer if the free KV blocks hold fewer, on as many temporary sequences
// as the context needs, with MaxRunning rows of logits) and throws the
// result away. A server calls it once before it reports ready:
// the first full step sizes every buffer a step uses (the runner's
// activations, the experts' scratch, the kernels' quantized inputs) and
// pays a page fault for each page of them it touches first, which made
// the first 16-prompt wave of a fresh server on the bench preset ~1.5×
// slower to its first tokens than the next. It first writes to every page
// of the free KV blocks (kvcache.Pool.Prefault): otherwise each block's
// first use stalls a step on page faults (~80 ms of a 16-stream wave on a
// VM whose host backs memory lazily). llama.cpp's server, vLLM and TGI warm
// up alike, and clear or preallocate their KV cache. experts computes the
// step's experts (nil: the engine's; a node passes one that computes only
// its own, so that warming up does not load its peers). The prefix cache,
// the cached KV blocks, the step metrics and the phase times are untouched.
// It runs between steps on the scheduler goroutine and blocks until done,
// ctx is cancelled (which also ends the prefaulting, or the step at its
// next layer), or the engine closes.
func (e *Engine) Warm(ctx context.Context, experts model.ExpertRunner) error {
	_, err := e.runEmbed(ctx, &embedJob{warm: true, runner: experts, ctx: ctx, out: make(chan embedResult, 1)})
	return err
}

// runEmbed hands j to the scheduler and waits for its result.
func (e *Engine) runEmbed(ctx context.Context, j *embedJob) ([]float32, error) {
	select {
	case e.embedCh <- j:
	case <-e.quit:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-j.out:
		return r.vec, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stats returns the counters as of the end of the last step.
func (e *Engine) Stats() Stats {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	return e.stats
}

// Close stops the scheduler: every queued and running request ends with
// FinishCancel and ErrClosed. It waits for the scheduler to exit; the
// kernels pool is the caller's to close afterwards.
func (e *Engine) Close() {
	e.once.Do(func() {
		e.submitMu.Lock()
		e.closed = true
		e.submitMu.Unlock()
		close(e.quit)
	})
	<-e.done
}

// InvalidatePrefixCache tells the engine that the model's weights changed
// (a hot expert update): before its next step it empties the prefix cache,
// so keys and values computed with the old weights never seed a new
// request. Requests already running finish with the blocks they hold. It
// does not block.
func (e *Engine) InvalidatePrefixCache() { e.stale.Store(true) }

// loop is the scheduler goroutine.
func (e *Engine) loop() {
	defer close(e.done)
	for {
		if len(e.running) == 0 && len(e.waiting) == 0 {
			select { // idle: wait for work
			case s := <-e.submitCh:
				e.waiting = append(e.waiting, s)
			case j := <-e.embedCh:
				r := e.embed(j)
				e.publish() // a caller that has its result sees its stats
				j.out <- r
				continue
			case <-e.quit:
				e.shutdown()
				return
			}
		}
	drain:
		for {
			select {
			case s := <-e.submitCh:
				e.waiting = append(e.waiting, s)
			case j := <-e.embedCh:
				r := e.embed(j)
				e.publish()
				j.out <- r
			case <-e.quit:
				e.shutdown()
				return
			default:
				break drain
			}
		}
		e.step()
	}
}

// step runs one forward pass over the running sequences.
func (e *Engine) step() {
	stale := e.stale.Swap(false)
	if e.weights != nil {
		if v := e.weights(); v != e.weightsV {
			e.weightsV, stale = v, true
		}
	}
	if stale {
		e.kv.Invalidate()
	}
	e.reap()
	e.admit()
	e.forward()
	e.reap()
	e.publish()
}

// reap ends cancelled sequences and drops finished ones from the lists.
func (e *Engine) reap() {
	for _, s := range e.waiting {
		if !s.done && s.ctx.Err() != nil {
			e.end(s, FinishCancel, nil)
		}
	}
	for _, s := range e.running {
		if !s.done && s.ctx.Err() != nil {
			e.end(s, FinishCancel, nil)
		}
	}
	e.waiting = slices.DeleteFunc(e.waiting, func(s *seq) bool { return s.done })
	e.running = slices.DeleteFunc(e.running, func(s *seq) bool { return s.done })
}

// blocksFor is the number of blocks that hold n positions.
func (e *Engine) blocksFor(n int) int { return (n + e.cfg.BlockSize - 1) / e.cfg.BlockSize }

// admit moves waiting sequences, oldest first, into the running set while
// the KV pool has room for each one's uncached prompt plus headroom. The
// room is what the pool has available less what the running sequences
// have still to allocate for their tokens (prompts being prefilled a
// chunk a step): a block is promised to one sequence only, else two
// prompts that cannot both fit would both be admitted and one preempted
// part way.
func (e *Engine) admit() {
	promised := 0
	for _, s := range e.running {
		promised += max(0, e.blocksFor(len(s.tokens))-s.cache.Blocks())
	}
	for len(e.waiting) > 0 && len(e.running) < e.cfg.MaxRunning {
		s := e.waiting[0]
		if s.cache == nil {
			s.cache = e.kv.NewSequence(e.ctxLen)
		}
		// The last token is always computed: its logits pick the next one.
		hit := s.cache.AttachPrefix(s.tokens[:len(s.tokens)-1])
		owed := e.blocksFor(len(s.tokens)) - s.cache.Blocks()
		if owed+e.cfg.AdmitHeadroom > e.kv.Available()-promised && len(e.running) > 0 {
			s.cache.Release()
			return // head-of-line: later requests wait their turn
		}
		promised += owed
		e.waiting = e.waiting[1:]
		if s.admits == 0 {
			e.queued.Add(-1)
			s.cached = hit
			e.counters.PrefixHits += int64(hit)
			e.counters.PrefixLookups += int64(len(s.req.Prompt))
		}
		s.admits++
		e.admitted++
		s.order = e.admitted
		e.running = append(e.running, s)
	}
}

// preempt frees the KV blocks of the most recently admitted running
// sequence and puts it back at the head of the queue; it recomputes what it
// lost (largely from the prefix cache) when readmitted. It reports false
// when nothing can be preempted.
func (e *Engine) preempt() bool {
	if len(e.running) == 0 {
		return false
	}
	i := 0
	for j, s := range e.running {
		if s.order > e.running[i].order {
			i = j
		}
	}
	s := e.running[i]
	s.cache.Release()
	e.running = slices.Delete(e.running, i, i+1)
	e.waiting = slices.Insert(e.waiting, 0, s)
	e.counters.Preemptions++
	return true
}

// plan fills e.spans for the running set and gets the blocks they need,
// preempting the newest sequences until everything fits.
func (e *Engine) plan() {
	for {
		e.pending = e.pending[:0]
		for _, s := range e.running {
			e.pending = append(e.pending, len(s.tokens)-s.cache.Len())
		}
		e.spans = planStep(e.spans[:0], e.pending, e.cfg.MaxBatchTokens, e.cfg.prefillChunk())
		ok := true
		for _, sp := range e.spans {
			c := e.running[sp.Seq].cache
			if err := c.Grow(c.Len() + sp.Count); err != nil {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if len(e.running) == 1 {
			// Cannot happen with New's check (the pool holds a whole
			// context); end the sequence rather than loop.
			e.end(e.running[0], FinishLength, nil)
			e.running = e.running[:0]
			e.spans = e.spans[:0]
			return
		}
		e.preempt()
	}
}

// forward builds one batch from the plan, runs it and samples.
func (e *Engine) forward() {
	if len(e.running) == 0 {
		return
	}
	e.plan()
	if len(e.spans) == 0 {
		return
	}
	b := &e.batch
	b.Tokens, b.Pos, b.Seqs, b.Logits = b.Tokens[:0], b.Pos[:0], b.Seqs[:0], b.Logits[:0]
	for _, sp := range e.spans {
		s := e.running[sp.Seq]
		start := s.cache.Len()
		for p := start; p < start+sp.Count; p++ {
			b.Tokens = append(b.Tokens, s.tokens[p])
			b.Pos = append(b.Pos, int32(p))
			b.Seqs = append(b.Seqs, s.cache)
			b.Logits = append(b.Logits, p == len(s.tokens)-1)
		}
	}
	t0 := time.Now()
	defer func() {
		e.counters.StepTokens.observe(StepTokensBounds, float64(len(b.Tokens)))
		e.counters.StepSeconds.observe(StepSecondsBounds, time.Since(t0).Seconds())
	}()
	logits, err := e.runner.Forward(context.Background(), b, e.experts)
	e.counters.Steps++
	if err != nil {
		for _, sp := range e.spans {
			e.end(e.running[sp.Seq], "", fmt.Errorf("engine: forward pass: %w", err))
		}
		return
	}
	V := e.w.Vocab
	row := 0
	e.draws = e.draws[:0]
	for _, sp := range e.spans {
		s := e.running[sp.Seq]
		if P := len(s.req.Prompt); !s.prefilled && s.cache.Len() >= P {
			// Once per request, when its prompt is done, cached tokens
			// included (vLLM's prompt_tokens_total; a preempted request's
			// recomputation is not counted again).
			s.prefilled = true
			e.counters.PromptTokens += int64(P)
		}
		s.cache.Commit(s.tokens)
		if s.cache.Len() != len(s.tokens) {
			continue // a prefill chunk short of the end: no logits
		}
		if !s.done {
			e.draws = append(e.draws, draw{s: s, logits: logits[row*V : (row+1)*V]})
		}
		row++
	}
	// Sampling from a vocabulary-wide distribution costs up to about a
	// millisecond per sequence (a float64 exp per token id at a 32k
	// vocabulary): serial work that left the pool's other threads idle
	// for a tenth of each step of a 16-stream batch.
	for len(e.scratch) < len(e.draws) {
		e.scratch = append(e.scratch, nil)
	}
	if e.sampleFn == nil {
		e.sampleFn = e.sampleDraws
	}
	if len(e.draws) > 1 && e.pool != nil {
		e.pool.Run(len(e.draws), e.sampleFn)
	} else {
		e.sampleDraws(0, len(e.draws))
	}
	for i := range e.draws {
		e.emit(&e.draws[i])
	}
	// The draws point at their sequences (with their token lists, and a
	// sampler's vocabulary-sized penalty counts when one is on): kept until
	// the next step, which an idle engine never runs, the last burst's
	// would stay live (MaxRunning of them).
	clear(e.draws)
}

// sampleDraws samples draws [lo, hi), each from its own sequence's sampler
// and logits (and log-probability scratch).
func (e *Engine) sampleDraws(lo, hi int) {
	for i := lo; i < hi; i++ {
		d := &e.draws[i]
		s := d.s
		if !s.req.Logprobs && s.req.TopLogprobs == 0 {
			d.tok = s.sampler.Sample(d.logits, s.tokens)
			continue
		}
		if len(e.scratch[i]) < len(d.logits) {
			e.scratch[i] = make([]float32, len(d.logits))
		}
		sc := e.scratch[i][:len(d.logits)]
		copy(sc, d.logits) // Sample writes penalties into logits
		norm := normOf(sc)
		d.tok = s.sampler.Sample(d.logits, s.tokens)
		d.logprob = norm.logprob(sc[d.tok])
		if s.req.TopLogprobs > 0 {
			d.top = topLogprobs(sc, s.req.TopLogprobs, norm)
		}
	}
}

// emit sends the token drawn for a sequence.
func (e *Engine) emit(d *draw) {
	s := d.s
	if s.done {
		return
	}
	ev := Event{HasToken: true, Token: d.tok, Logprob: d.logprob, TopLogprobs: d.top}
	tok := d.tok
	if len(s.events) >= cap(s.events)-1 { // keep the last slot for Done
		// The reader fell behind: the token is dropped, not counted.
		e.end(s, FinishCancel, ErrSlowConsumer)
		return
	}
	if s.generated == 0 {
		s.ttft = time.Since(s.submitted)
	}
	s.tokens = append(s.tokens, tok)
	s.generated++
	e.counters.GeneratedTokens++
	s.events <- ev
	switch {
	case !s.req.IgnoreEOS && e.isEOG(tok), slices.Contains(s.req.StopTokens, tok):
		e.end(s, FinishStop, nil)
	case s.generated >= s.req.MaxTokens || len(s.tokens) >= e.ctxLen:
		e.end(s, FinishLength, nil)
	}
}

// end finishes s: its blocks go back to the pool (full ones stay in the
// prefix cache) and its Done event waits for the end of the step.
func (e *Engine) end(s *seq, why FinishReason, err error) {
	if s.done {
		return
	}
	s.done, s.finish, s.err = true, why, err
	if s.cache != nil {
		s.cache.Release()
	}
	if s.admits == 0 {
		e.queued.Add(-1)
	}
	e.finished = append(e.finished, s)
}

// publish copies the counters for Stats, then delivers the step's Done
// events, so a reader that sees Done also sees the blocks it freed.
func (e *Engine) publish() {
	e.counters.Running = len(e.running)
	e.counters.Waiting = len(e.waiting) + len(e.submitCh)
	e.counters.KVBlocksUsed = e.kv.Used()
	e.counters.KVBlocksCached = e.kv.Cached()
	e.counters.Evictions = e.kv.Evictions()
	e.counters.Phases = e.phases
	e.statsMu.Lock()
	e.stats = e.counters
	e.statsMu.Unlock()
	for _, s := range e.finished {
		s.events <- Event{
			Done:         true,
			FinishReason: s.finish,
			Err:          s.err,
			PromptTokens: len(s.req.Prompt),
			CachedTokens: s.cached,
			Generated:    s.generated,
			TTFT:         s.ttft,
		}
		close(s.events)
	}
	clear(e.finished)
	e.finished = e.finished[:0]
}

// shutdown ends every request with ErrClosed.
func (e *Engine) shutdown() {
	for {
		select {
		case s := <-e.submitCh:
			e.waiting = append(e.waiting, s)
			continue
		case j := <-e.embedCh:
			j.out <- embedResult{err: ErrClosed}
			continue
		default:
		}
		break
	}
	for _, s := range e.running {
		e.end(s, FinishCancel, ErrClosed)
	}
	for _, s := range e.waiting {
		e.end(s, FinishCancel, ErrClosed)
	}
	e.running, e.waiting = nil, nil
	e.publish()
}

// embed runs one embedding request (or Warm's step) to completion on a
// temporary sequence and returns what its caller is sent once the stats
// are published.
func (e *Engine) embed(j *embedJob) embedResult {
	if j.warm {
		return e.warm(j)
	}
	c := e.kv.NewSequence(e.ctxLen)
	defer c.Release()
	// Check first: Grow evicts cached blocks as it goes, and would leave
	// the prefix cache poorer for a request it then refuses.
	if need := e.blocksFor(len(j.tokens)); need > e.kv.Available() {
		return embedResult{err: fmt.Errorf("%w: no KV room to embed %d tokens (%d blocks, %d available)", ErrOverloaded, len(j.tokens), need, e.kv.Available())}
	}
	if err := c.Grow(len(j.tokens)); err != nil {
		return embedResult{err: fmt.Errorf("%w: no KV room to embed %d tokens: %w", ErrOverloaded, len(j.tokens), err)}
	}
	dim := e.w.Dim
	sum := make([]float64, dim)
	b := model.Batch{}
	for off := 0; off < len(j.tokens); off += e.cfg.MaxBatchTokens {
		chunk := j.tokens[off:min(off+e.cfg.MaxBatchTokens, len(j.tokens))]
		b.Tokens, b.Pos, b.Seqs = chunk, b.Pos[:0], b.Seqs[:0]
		for i := range chunk {
			b.Pos = append(b.Pos, int32(off+i))
			b.Seqs = append(b.Seqs, c)
		}
		t0 := time.Now()
		h, err := e.runner.ForwardHidden(context.Background(), &b, e.experts)
		e.counters.Steps++
		e.counters.StepTokens.observe(StepTokensBounds, float64(len(chunk)))
		e.counters.StepSeconds.observe(StepSecondsBounds, time.Since(t0).Seconds())
		if err != nil {
			return embedResult{err: fmt.Errorf("engine: embedding: %w", err)}
		}
		for i := range chunk {
			for d, x := range h[i*dim : (i+1)*dim] {
				sum[d] += float64(x)
			}
		}
	}
	out := make([]float32, dim)
	for d := range out {
		out[d] = float32(sum[d] / float64(len(j.tokens)))
	}
	return embedResult{vec: out}
}

// warm runs Warm's step: MaxBatchTokens tokens, or as many as the free KV
// blocks hold (cached ones are never evicted for it), over as many
// temporary sequences as the context needs, with the logits of as many
// rows as MaxRunning sequences would ask for. The tokens are spread over
// the vocabulary so that the gate spreads them over the experts as text
// does.
func (e *Engine) warm(j *embedJob) embedResult {
	// Back the free KV blocks with memory first: a step storing keys in a
	// block for the first time would otherwise stop on its page faults.
	var run func(int, func(lo, hi int))
	if e.pool != nil {
		run = e.pool.Run
	}
	if err := e.kv.Prefault(j.ctx, run); err != nil {
		return embedResult{err: fmt.Errorf("engine: warm-up: %w", err)}
	}
	var b model.Batch
	var seqs []*kvcache.Cache
	defer func() {
		for _, c := range seqs {
			c.Release()
		}
	}()
	for len(b.Tokens) < e.cfg.MaxBatchTokens {
		m := min(e.cfg.MaxBatchTokens-len(b.Tokens), e.ctxLen, e.kv.Free()*e.cfg.BlockSize)
		if m <= 0 {
			break
		}
		c := e.kv.NewSequence(e.ctxLen)
		seqs = append(seqs, c)
		if err := c.Grow(m); err != nil {
			break
		}
		for p := range m {
			k := len(b.Tokens)
			b.Tokens = append(b.Tokens, int32((k*7919+1)%e.w.Vocab))
			b.Pos = append(b.Pos, int32(p))
			b.Seqs = append(b.Seqs, c)
		}
	}
	if len(b.Tokens) == 0 {
		return embedResult{}
	}
	b.Logits = make([]bool, len(b.Tokens))
	for i := max(len(b.Tokens)-e.cfg.MaxRunning, 0); i < len(b.Tokens); i++ {
		b.Logits[i] = true
	}
	experts := j.runner
	if experts == nil {
		experts = e.experts
	}
	// Cancelled (the server stopping), the step ends at the next layer.
	phases := e.runner.Phases // the warm-up is not a step: its time is not counted
	e.runner.Phases = nil
	_, err := e.runner.Forward(j.ctx, &b, experts)
	e.runner.Phases = phases
	if err != nil {
		err = fmt.Errorf("engine: warm-up: %w", err)
	}
	return embedResult{err: err}
}

// logSumExp is log Σ exp(x) in float64, shifted by the maximum. A NaN
// logit counts as −Inf, as the sampler reads it.
func logSumExp(x []float32) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		if float64(v) > m {
			m = float64(v)
		}
	}
	if math.IsInf(m, 0) {
		return m
	}
	var s float64
	for _, v := range x {
		if v == v {
			s += math.Exp(float64(v) - m)
		}
	}
	return m + math.Log(s)
}

// logNorm turns logits into log-probabilities: minus their log-sum-exp or,
// when some logits are +Inf, those share all the probability (the sampler
// picks the first of them) and the others have none.
type logNorm struct {
	lse    float64
	posInf int
}

// normOf is logits' logNorm.
func normOf(logits []float32) logNorm {
	n := logNorm{lse: logSumExp(logits)}
	if math.IsInf(n.lse, 1) {
		for _, v := range logits {
			if math.IsInf(float64(v), 1) {
				n.posInf++
			}
		}
	}
	return n
}

// logprob is the log-probability of a token of logit v.
func (n logNorm) logprob(v float32) float32 {
	if n.posInf > 0 {
		if math.IsInf(float64(v), 1) {
			return float32(-math.Log(float64(n.posInf)))
		}
		return float32(math.Inf(-1))
	}
	return float32(float64(v) - n.lse)
}

// topLogprobs returns the k highest-logit tokens (ties to the lower id) with
// their log-probabilities, best first.
func topLogprobs(logits []float32, k int, norm logNorm) []TokenLogprob {
	top := make([]TokenLogprob, 0, k+1)
	for id, v := range logits {
		if v != v || len(top) == k && v <= top[k-1].Logprob {
			continue // a NaN logit is no candidate, as for the sampler
		}
		i := len(top)
		for i > 0 && v > top[i-1].Logprob {
			i--
		}
		top = slices.Insert(top, i, TokenLogprob{Token: int32(id), Logprob: v})
		if len(top) > k {
			top = top[:k]
		}
	}
	for i := range top {
		top[i].Logprob = norm.logprob(top[i].Logprob)
	}
	return top
}
