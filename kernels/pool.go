package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a fixed set of persistent worker goroutines that share data-
// parallel loops with their callers.
//
// Run splits its range into a few pieces per thread; the caller and any idle
// workers claim pieces until none is left, so no piece waits for one
// particular goroutine. That matters when the pool's goroutines do not all
// get a CPU — several pools or processes on few cores, or other work on the
// machine: a static split would make Run wait for a descheduled worker's
// share while the caller idles. Concurrent Runs proceed side by side (each
// caller works on its own loop, idle workers help whichever they are handed).
//
// A worker that finishes polls for the next loop for up to spinFor (yielding
// to other goroutines between polls), then blocks: a forward pass issues
// loops back to back, and waking a parked goroutine costs more than the gap
// between them, while a worker never spins for longer than that when the
// process is idle.
//
// fn may call Run on the same pool: the nested loop's caller claims its
// pieces itself when every worker is busy.
type Pool struct {
	threads int
	jobs    chan *job // offers of a loop to the workers
	free    chan *job // finished jobs for reuse (Run does not allocate)

	mu     sync.RWMutex // Close write-locks; offering a job read-locks
	closed bool
}

// job is one Run's loop. state packs the number of pieces (high 32 bits)
// and the number of claims so far (low 32 bits), or for a guided job
// (RunGuided, guidedFlag set) the range end and the next unclaimed index.
// A claim is a compare-and-swap of state, so a worker holding a stale offer
// of a reused job either sees the old, exhausted state or claims a piece of
// the new loop, whose fields were written before state was reset.
type job struct {
	fn        func(lo, hi int)
	n         int
	share     int // a guided claim takes 1/share of what is left (fixed per pool)
	state     atomic.Uint64
	completed atomic.Int64  // pieces done, or a guided job's items done
	wake      chan struct{} // one token per Run, sent by the last piece
}

// guidedFlag marks a guided job's state.
const guidedFlag = 1 << 63

// piecesPerThread is how many pieces Run makes per thread: enough that a
// late or descheduled participant leaves little for the others to wait on,
// few enough that per-piece overhead stays negligible.
const piecesPerThread = 4

// NewPool starts a pool of threads workers (threads < 1 is treated as 1). The
// calling goroutine of Run works too, so threads-1 goroutines are started.
func NewPool(threads int) *Pool {
	threads = max(threads, 1)
	p := &Pool{
		threads: threads,
		jobs:    make(chan *job, 4*threads),
		free:    make(chan *job, 64),
	}
	for range threads - 1 {
		go p.worker()
	}
	return p
}

// Threads is the number of goroutines (the caller and the workers) that can
// work on a Run at once.
func (p *Pool) Threads() int { return p.threads }

func (p *Pool) worker() {
	for {
		j, ok := recvSpin(p.jobs)
		if !ok {
			return // closed
		}
		j.work()
	}
}

// work claims and runs pieces of j until none is left.
func (j *job) work() {
	for {
		v := j.state.Load()
		if v&guidedFlag != 0 {
			n, next := int(v>>32&(1<<31-1)), int(uint32(v))
			if next >= n {
				return
			}
			size := max((n-next)/j.share, 1)
			if !j.state.CompareAndSwap(v, v+uint64(size)) {
				continue
			}
			j.fn(next, next+size)
			if j.completed.Add(int64(size)) == int64(n) {
				j.wake <- struct{}{}
			}
			continue
		}
		np, k := int(v>>32), int(uint32(v))
		if k >= np {
			return
		}
		if !j.state.CompareAndSwap(v, v+1) {
			continue
		}
		lo, hi := chunk(j.n, np, k)
		j.fn(lo, hi)
		if j.completed.Add(1) == int64(np) {
			j.wake <- struct{}{}
		}
	}
}

// spinFor bounds how long a worker (or Run, waiting for the last pieces)
// polls before parking.
const spinFor = 50 * time.Microsecond

// recvSpin receives from ch, polling for up to spinFor before blocking; it
// reports false when ch is closed.
func recvSpin[T any](ch <-chan T) (T, bool) {
	var deadline time.Time
	for i := 0; ; i++ {
		select {
		case v, ok := <-ch:
			return v, ok
		default:
		}
		if i&15 == 15 {
			now := time.Now()
			if deadline.IsZero() {
				deadline = now.Add(spinFor)
			} else if now.After(deadline) {
				v, ok := <-ch
				return v, ok
			}
		}
		runtime.Gosched()
	}
}

// chunk returns the k-th of nchunks contiguous, near-equal pieces of [0, n).
func chunk(n, nchunks, k int) (lo, hi int) {
	return n * k / nchunks, n * (k + 1) / nchunks
}

// Run splits [0, n) into min(n, piecesPerThread·Threads()) contiguous
// pieces, calls fn once per piece (on the caller and on idle workers, each
// piece on one goroutine) and returns when all have returned. Pieces depend
// only on n and Threads(); which goroutine runs a piece does not, so fn must
// not care. Run does not allocate in steady state. After Close, Run calls
// fn(0, n) on the caller.
func (p *Pool) Run(n int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	np := min(n, p.threads*piecesPerThread)
	if p.threads == 1 || np == 1 {
		fn(0, n)
		return
	}
	p.run(n, np, false, fn)
}

// guidedShare is the share of the items left that a RunGuided claim takes,
// per thread: with two threads a claim takes a quarter of what is left.
const guidedShare = 2

// RunGuided is Run with pieces claimed by guided self-scheduling: each
// claim takes 1/(2·Threads()) of the items not yet claimed, at least one.
// The first pieces are long (a thread streams contiguous memory) and the
// last ones a single item, so a loop whose items differ in cost (weight
// tiles of products with different numbers of rows) ends with every thread
// busy until about one item's time from the end, where Run's equal pieces
// can leave one thread idle for most of a piece. Piece boundaries depend on
// timing, so fn must not care where they fall. It does not allocate in
// steady state; after Close it calls fn(0, n) on the caller.
func (p *Pool) RunGuided(n int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if p.threads == 1 || n == 1 {
		fn(0, n)
		return
	}
	if n >= 1<<31 {
		p.Run(n, fn) // the state packs the range in 31 bits
		return
	}
	p.run(n, min(n, p.threads), true, fn)
}

// run offers a job of n items to up to np−1 workers and works on it: in np
// equal pieces, or guided.
func (p *Pool) run(n, np int, guided bool, fn func(lo, hi int)) {
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		fn(0, n)
		return
	}
	var j *job
	select {
	case j = <-p.free:
	default:
		j = &job{wake: make(chan struct{}, 1), share: guidedShare * p.threads}
	}
	j.fn, j.n = fn, n
	j.completed.Store(0)
	if guided {
		j.state.Store(guidedFlag | uint64(n)<<32)
	} else {
		j.state.Store(uint64(np) << 32)
	}
	for range min(p.threads, np) - 1 {
		select {
		case p.jobs <- j:
		default: // every worker has offers queued; they would come late
		}
	}
	p.mu.RUnlock()
	j.work()
	// Wait for pieces still running on workers: the token the last piece
	// sends (always taken, so the job is clean for reuse).
	recvSpin(j.wake)
	j.fn = nil
	select {
	case p.free <- j:
	default:
	}
}

// Close stops the workers. It is safe to call more than once; Run after Close
// runs serially on the caller.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.jobs)
	}
}
