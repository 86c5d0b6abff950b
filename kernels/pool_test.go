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

func TestPoolRunGuidedCoversRange(t *testing.T) {
	for threads := 1; threads <= 5; threads++ {
		p := NewPool(threads)
		for n := 0; n <= 300; n += 1 + n/8 {
			hits := make([]int32, n)
			var calls, first atomic.Int32
			p.RunGuided(n, func(lo, hi int) {
				if lo >= hi {
					t.Errorf("empty piece [%d,%d)", lo, hi)
				}
				if lo == 0 {
					first.Store(int32(hi))
				}
				calls.Add(1)
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&hits[i], 1)
				}
			})
			for i, h := range hits {
				if h != 1 {
					t.Fatalf("threads %d n %d: index %d ran %d times", threads, n, i, h)
				}
			}
			if n == 0 {
				continue
			}
			// The first claim takes its share of the whole range (all of it
			// on one thread); there are at most about 2·threads·ln(n)+1
			// claims.
			want := max(n/(guidedShare*threads), 1)
			if threads == 1 {
				want = n
			}
			if int(first.Load()) != want {
				t.Errorf("threads %d n %d: first piece ends at %d, want %d", threads, n, first.Load(), want)
			}
			if c := int(calls.Load()); c > n || (threads == 1 && c != 1) {
				t.Errorf("threads %d n %d: %d pieces", threads, n, c)
			}
		}
		p.Close()
		ran := 0
		p.RunGuided(7, func(lo, hi int) { ran += hi - lo })
		if ran != 7 {
			t.Fatalf("RunGuided after Close covered %d of 7", ran)
		}
	}
}

// TestPoolRunMixed alternates Run and RunGuided from several goroutines on
// one pool, so that jobs are reused across the two kinds while workers may
// hold stale offers of them (run with -race).
func TestPoolRunMixed(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	var total atomic.Int64
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			for i := range 300 {
				fn := func(lo, hi int) { total.Add(int64(hi - lo)) }
				if (i+g)%2 == 0 {
					p.Run(10+i%7, fn)
				} else {
					p.RunGuided(10+i%7, fn)
				}
			}
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	want := int64(0)
	for i := range 300 {
		want += int64(10 + i%7)
	}
	if total.Load() != 4*want {
		t.Fatalf("total %d, want %d", total.Load(), 4*want)
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
	if a := testing.AllocsPerRun(100, func() { p.RunGuided(64, fn) }); a != 0 {
		t.Fatalf("RunGuided allocates %v per call", a)
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
