package kernels

import (
	"sync/atomic"
	"testing"
)

func TestPoolCoversRange(t *testing.T) {
	for threads := 1; threads <= 5; threads++ {
		p := NewPool(threads)
		if p.Threads() != threads {
			t.Fatalf("Threads() = %d, want %d", p.Threads(), threads)
		}
		for n := 0; n <= 40; n++ {
			hits := make([]int32, n)
			var calls atomic.Int32
			p.Run(n, func(lo, hi int) {
				calls.Add(1)
				if lo >= hi {
					t.Errorf("empty chunk [%d,%d)", lo, hi)
				}
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&hits[i], 1)
				}
			})
			for i, h := range hits {
				if h != 1 {
					t.Fatalf("threads %d n %d: index %d ran %d times", threads, n, i, h)
				}
			}
			want := min(n, threads*piecesPerThread)
			if threads == 1 {
				want = min(n, 1)
			}
			if int(calls.Load()) != want {
				t.Fatalf("threads %d n %d: %d pieces, want %d", threads, n, calls.Load(), want)
			}
		}
		p.Close()
		p.Close() // idempotent
		ran := 0
		p.Run(7, func(lo, hi int) { ran += hi - lo })
		if ran != 7 {
			t.Fatalf("Run after Close covered %d of 7", ran)
		}
	}
}

func TestPoolConcurrentRun(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	var total atomic.Int64
	done := make(chan struct{})
	for range 4 {
		go func() {
			for range 100 {
				p.Run(10, func(lo, hi int) { total.Add(int64(hi - lo)) })
			}
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	if total.Load() != 4*100*10 {
		t.Fatalf("total %d, want %d", total.Load(), 4*100*10)
	}
}

func TestPoolRunNoAlloc(t *testing.T) {
	p := NewPool(4)
	defer p.Close()
	var sink atomic.Int64
	fn := func(lo, hi int) { sink.Add(int64(hi - lo)) }
	if a := testing.AllocsPerRun(100, func() { p.Run(64, fn) }); a != 0 {
		t.Fatalf("Run allocates %v per call", a)
	}
}

func BenchmarkPoolRun(b *testing.B) {
	p := NewPool(4)
	defer p.Close()
	var sink atomic.Int64
	fn := func(lo, hi int) { sink.Add(int64(hi - lo)) }
	b.ReportAllocs()
	for b.Loop() {
		p.Run(1024, fn)
	}
}

// TestPoolRunWithoutWorkers checks that a Run finishes on its caller alone
// while every worker is busy elsewhere: no piece waits for a particular
// goroutine (as with several pools, or processes, on few cores).
func TestPoolRunWithoutWorkers(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	release := make(chan struct{})
	blocked := make(chan struct{}, 2*piecesPerThread)
	firstDone := make(chan struct{})
	go func() {
		// Every piece blocks, so both the worker and this caller are stuck.
		p.Run(2*piecesPerThread, func(lo, hi int) {
			blocked <- struct{}{}
			<-release
		})
		close(firstDone)
	}()
	<-blocked
	<-blocked // the caller and the worker each hold a piece
	var n atomic.Int64
	p.Run(100, func(lo, hi int) { n.Add(int64(hi - lo)) })
	if n.Load() != 100 {
		t.Fatalf("covered %d of 100", n.Load())
	}
	close(release)
	<-firstDone
}

// TestPoolNestedRun checks that a piece may run a loop of its own on the
// same pool while every worker is busy in the outer one.
func TestPoolNestedRun(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	var total atomic.Int64
	p.Run(12, func(lo, hi int) {
		for range hi - lo {
			p.Run(10, func(lo, hi int) { total.Add(int64(hi - lo)) })
		}
	})
	if total.Load() != 12*10 {
		t.Fatalf("total %d, want %d", total.Load(), 12*10)
	}
}
