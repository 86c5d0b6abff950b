package kernels

import (
	"runtime"
	"sync"
	"time"
)

// Pool is a fixed set of persistent worker goroutines that run one data-
// parallel loop at a time. A worker that finishes a loop polls for the next
// one for up to spinFor (yielding to other goroutines between polls), then
// blocks on a channel: a forward pass issues loops back to back, and waking
// a parked goroutine costs more than the gap between them, while a worker
// never spins for longer than that when the process is idle.
//
// Run may be called from any goroutine; concurrent calls are serialized. fn
// must not call Run on the same pool (that deadlocks).
type Pool struct {
	threads int

	mu      sync.Mutex // serializes Run
	fn      func(lo, hi int)
	n       int
	nchunks int
	start   []chan struct{} // one per worker (workers are chunks 1..threads-1)
	done    chan struct{}

	closeOnce sync.Once
	closed    bool // guarded by mu
}

// NewPool starts a pool of threads workers (threads < 1 is treated as 1). The
// calling goroutine of Run does the first chunk itself, so threads-1
// goroutines are started.
func NewPool(threads int) *Pool {
	threads = max(threads, 1)
	p := &Pool{
		threads: threads,
		start:   make([]chan struct{}, threads-1),
		done:    make(chan struct{}, threads),
	}
	for k := range p.start {
		p.start[k] = make(chan struct{}, 1)
		go p.worker(k+1, p.start[k])
	}
	return p
}

// Threads is the number of chunks Run splits work into at most.
func (p *Pool) Threads() int { return p.threads }

func (p *Pool) worker(k int, start <-chan struct{}) {
	for {
		if !recvSpin(start) {
			return // closed
		}
		lo, hi := chunk(p.n, p.nchunks, k)
		p.fn(lo, hi)
		p.done <- struct{}{}
	}
}

// spinFor bounds how long a worker (or Run, waiting for its workers) polls
// before parking.
const spinFor = 50 * time.Microsecond

// recvSpin receives from ch, polling for up to spinFor before blocking; it
// reports false when ch is closed.
func recvSpin(ch <-chan struct{}) bool {
	var deadline time.Time
	for i := 0; ; i++ {
		select {
		case _, ok := <-ch:
			return ok
		default:
		}
		if i&15 == 15 {
			now := time.Now()
			if deadline.IsZero() {
				deadline = now.Add(spinFor)
			} else if now.After(deadline) {
				_, ok := <-ch
				return ok
			}
		}
		runtime.Gosched()
	}
}

// chunk returns the k-th of nchunks contiguous, near-equal pieces of [0, n).
func chunk(n, nchunks, k int) (lo, hi int) {
	return n * k / nchunks, n * (k + 1) / nchunks
}

// Run splits [0, n) into min(n, Threads()) contiguous chunks, calls fn once
// per chunk (chunk 0 on the calling goroutine, the others on workers) and
// returns when all have returned. The split depends only on n and Threads().
// Run does not allocate. After Close, Run calls fn(0, n) on the caller.
func (p *Pool) Run(n int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	nchunks := min(n, p.threads)
	if nchunks == 1 {
		fn(0, n)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		fn(0, n)
		return
	}
	p.fn, p.n, p.nchunks = fn, n, nchunks
	for k := 1; k < nchunks; k++ {
		p.start[k-1] <- struct{}{}
	}
	lo, hi := chunk(n, nchunks, 0)
	fn(lo, hi)
	for k := 1; k < nchunks; k++ {
		recvSpin(p.done)
	}
	p.fn = nil
}

// Close stops the workers. It is safe to call more than once; Run after Close
// runs serially on the caller.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		for _, c := range p.start {
			close(c)
		}
		p.mu.Unlock()
	})
}
