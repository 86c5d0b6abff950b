package bench

import (
	"runtime"
	"sync"
	"time"

	"github.com/conclave-ai/conclave/kernels"
)

// PeakResult is the measured compute ceiling of this machine: register-only
// multiply-accumulate loops (kernels.PeakLoop) on Threads goroutines, each
// on its own OS thread, best of a few short runs. A multiply-add counts as
// two operations, as GFLOP/s of a GEMM do. Zero means the CPU (or build)
// has no such instructions.
type PeakResult struct {
	Threads    int     `json:"threads"`
	Int8GOPS   float64 `json:"int8_gops"`   // VPDPBUSD (AVX-512 VNNI), 1e9 ops/s
	FP32GFLOPS float64 `json:"fp32_gflops"` // FMA on the widest vectors, 1e9 flop/s
}

// MeasurePeak measures the int8 and float32 compute peaks on threads
// threads, each run lasting about d.
func MeasurePeak(threads int, d time.Duration) PeakResult {
	r := PeakResult{Threads: threads}
	r.Int8GOPS = peakOf(kernels.PeakInt8, threads, d)
	r.FP32GFLOPS = peakOf(kernels.PeakFP32, threads, d)
	return r
}

func peakOf(kind kernels.PeakKind, threads int, d time.Duration) float64 {
	if _, ok := kernels.PeakLoop(kind, 1); !ok {
		return 0
	}
	const chunk = 1 << 16 // iterations between clock checks (~0.1 ms)
	best := 0.0
	for range 3 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var total int64
		start := time.Now()
		deadline := start.Add(d)
		for range threads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				var ops int64
				for time.Now().Before(deadline) {
					n, _ := kernels.PeakLoop(kind, chunk)
					ops += n
				}
				mu.Lock()
				total += ops
				mu.Unlock()
			}()
		}
		wg.Wait()
		if g := float64(total) / time.Since(start).Seconds() / 1e9; g > best {
			best = g
		}
	}
	return best
}
