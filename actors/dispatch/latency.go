package dispatch

import (
	"sync"
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
func (d *Dispatcher) Latency() Latency { return d.lat.snapshot() }

// snapshot is h as a Latency.
func (h *latencyHist) snapshot() Latency {
	l := Latency{Buckets: make(map[float64]uint64, len(LatencyBuckets)), Sum: time.Duration(h.sumNS.Load())}
	var cum uint64
	for i, b := range LatencyBuckets {
		cum += h.counts[i].Load()
		l.Buckets[b] = cum
	}
	l.Count = cum + h.counts[len(LatencyBuckets)].Load()
	return l
}

// nodeHists are latency histograms per node: series bounded by the
// cluster's size.
type nodeHists struct {
	mu sync.Mutex
	m  map[string]*latencyHist
}

func (n *nodeHists) observe(node string, d time.Duration) {
	n.mu.Lock()
	if n.m == nil {
		n.m = map[string]*latencyHist{}
	}
	h := n.m[node]
	if h == nil {
		h = &latencyHist{}
		n.m[node] = h
	}
	n.mu.Unlock()
	h.observe(d)
}

// snapshot returns each node's histogram; nodes keep rejects (gone from
// the cluster) are forgotten, so node churn does not grow the series.
func (n *nodeHists) snapshot(keep func(node string) bool) map[string]Latency {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]Latency, len(n.m))
	for node, h := range n.m {
		if keep != nil && !keep(node) {
			delete(n.m, node)
			continue
		}
		out[node] = h.snapshot()
	}
	return out
}

// NodeBusy returns, per node this dispatcher called, the time its expert
// actors reported computing each call (one expert, or a batch of a
// layer's experts), as their answers say: a node slow to compute shows
// here, where a layer's latency (Latency) is its slowest call's. Nodes
// keep rejects are forgotten; nil keeps all.
func (d *Dispatcher) NodeBusy(keep func(node string) bool) map[string]Latency {
	return d.nodeBusy.snapshot(keep)
}
