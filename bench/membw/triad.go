package membw

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrInvalidConfig is wrapped by Config.Validate's errors.
var ErrInvalidConfig = errors.New("membw: invalid config")

// Config is one triad measurement.
type Config struct {
	// ArrayBytes is the size of each of the three arrays, in bytes. STREAM's
	// rule is at least four times the last-level cache; this CPU family
	// reports caches of hundreds of MiB, so the default is 512 MiB.
	ArrayBytes int64
	// Threads is the number of goroutines that split the arrays.
	Threads int
	// Reps is the number of timed passes; the fastest counts (STREAM's rule).
	Reps int
}

// DefaultConfig is three 512 MiB arrays, all CPUs, five passes.
func DefaultConfig() Config {
	return Config{ArrayBytes: 512 << 20, Threads: runtime.NumCPU(), Reps: 5}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.ArrayBytes < 8*1024:
		return fmt.Errorf("%w: array of %d bytes, want at least 8 KiB", ErrInvalidConfig, c.ArrayBytes)
	case c.Threads < 1:
		return fmt.Errorf("%w: %d threads", ErrInvalidConfig, c.Threads)
	case c.Reps < 1:
		return fmt.Errorf("%w: %d reps", ErrInvalidConfig, c.Reps)
	}
	return nil
}

// Result is a triad measurement.
type Result struct {
	ArrayBytes int64   `json:"array_bytes"` // bytes per array
	Threads    int     `json:"threads"`
	Reps       int     `json:"reps"`
	BestGBs    float64 `json:"best_gbs"` // 1e9 bytes/s of the fastest pass
	MeanGBs    float64 `json:"mean_gbs"` // over all passes
	// BytesPerPass is what one pass is credited with: three arrays of 8-byte
	// elements (read b, read c, write a), as STREAM counts. A cache that
	// write-allocates also reads a before writing it, so the bus carries
	// about 4/3 of this; the figure is comparable with STREAM's, not with
	// the bus peak.
	BytesPerPass int64 `json:"bytes_per_pass"`
}

// Triad computes a[i] = b[i] + s·c[i] for every i. The slices must have equal
// lengths.
func Triad(a, b, c []float64, s float64) {
	n := len(a)
	b, c = b[:n], c[:n]
	i := 0
	// Unrolled by four so the loop is limited by memory, not by branches.
	for ; i+4 <= n; i += 4 {
		a[i] = b[i] + s*c[i]
		a[i+1] = b[i+1] + s*c[i+1]
		a[i+2] = b[i+2] + s*c[i+2]
		a[i+3] = b[i+3] + s*c[i+3]
	}
	for ; i < n; i++ {
		a[i] = b[i] + s*c[i]
	}
}

// Measure allocates the three arrays, touches them from the threads that
// will use them, runs the triad cfg.Reps times and returns the bandwidth.
// It holds 3 × cfg.ArrayBytes of memory while it runs and returns it to the
// Go runtime afterwards.
func Measure(cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	n := int(cfg.ArrayBytes / 8)
	a, b, c := make([]float64, n), make([]float64, n), make([]float64, n)
	parallel(cfg.Threads, n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			a[i], b[i], c[i] = 0, 1, 2
		}
	})
	const s = 3.0
	res := Result{ArrayBytes: int64(n) * 8, Threads: cfg.Threads, Reps: cfg.Reps, BytesPerPass: 3 * 8 * int64(n)}
	var sum float64
	for r := 0; r < cfg.Reps; r++ {
		t0 := time.Now()
		parallel(cfg.Threads, n, func(lo, hi int) { Triad(a[lo:hi], b[lo:hi], c[lo:hi], s) })
		gbs := float64(res.BytesPerPass) / time.Since(t0).Seconds() / 1e9
		sum += gbs
		res.BestGBs = max(res.BestGBs, gbs)
	}
	res.MeanGBs = sum / float64(cfg.Reps)
	if a[n-1] != 1+s*2 {
		return res, fmt.Errorf("membw: triad computed %v, want %v", a[n-1], 1+s*2)
	}
	return res, nil
}

// parallel runs fn over threads contiguous chunks of [0, n) and waits.
func parallel(threads, n int, fn func(lo, hi int)) {
	var wg sync.WaitGroup
	for k := 0; k < threads; k++ {
		lo, hi := n*k/threads, n*(k+1)/threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// AvailableBytes reads MemAvailable from /proc/meminfo (Linux); ok is false
// where it cannot be read.
func AvailableBytes() (n int64, ok bool) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	return StatusField(string(data), "MemAvailable")
}

// StatusField parses "Key:   1234 kB" out of a /proc status-style text
// (/proc/meminfo, /proc/self/status) and returns the value in bytes.
func StatusField(text, key string) (int64, bool) {
	for _, line := range strings.Split(text, "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n, true
	}
	return 0, false
}
