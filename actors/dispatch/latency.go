package dispatch

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds, in seconds, of the layer dispatch
// latency histogram: from a local call on a tiny model to a slow remote
// one, and past the default expert call timeout (2 s), where a layer that
// timed out and retried lands.
var LatencyBuckets = latencyBounds[:]

var latencyBounds = [...]float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// latencyHist is a lock-free fixed-bucket histogram of RunExperts
// durations (one layer's experts, all replicas, retries included).
type latencyHist struct {
	counts [len(latencyBounds) + 1]atomic.Uint64 // the last is +Inf
	sumNS  atomic.Int64
}

func (h *latencyHist) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(LatencyBuckets) && s > LatencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNS.Add(int64(d))
}

// Latency is a snapshot of the layer dispatch latency histogram:
// cumulative counts per LatencyBuckets bound, the total count and the sum.
type Latency struct {
	Buckets map[float64]uint64 // upper bound (s) → observations ≤ bound
	Count   uint64
	Sum     time.Duration
}

// Latency returns the distribution of RunExperts durations so far.
func (d *Dispatcher) Latency() Latency {
	l := Latency{Buckets: make(map[float64]uint64, len(LatencyBuckets)), Sum: time.Duration(d.lat.sumNS.Load())}
	var cum uint64
	for i, b := range LatencyBuckets {
		cum += d.lat.counts[i].Load()
		l.Buckets[b] = cum
	}
	l.Count = cum + d.lat.counts[len(LatencyBuckets)].Load()
	return l
}
