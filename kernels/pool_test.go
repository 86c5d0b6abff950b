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
			if want := min(n, threads); int(calls.Load()) != want {
				t.Fatalf("threads %d n %d: %d chunks, want %d", threads, n, calls.Load(), want)
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
