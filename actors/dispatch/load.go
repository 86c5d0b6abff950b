package dispatch

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/conclave-ai/conclave/router"
)

// rowTable counts rows routed per expert, densely indexed
// layer*experts+index. Only RunExperts (under Dispatcher.mu) increments it
// or replaces it with a bigger one; readers load it atomically.
type rowTable struct {
	layers, experts int
	rows            []atomic.Int64
}

// count adds rows routed to (layer, expert), growing the table the first
// time an expert beyond its shape is seen (a model loads once, so this
// allocates only during the first layers).
func (d *Dispatcher) count(layer, expert, rows int) {
	t := d.routed.Load()
	if t == nil || layer >= t.layers || expert >= t.experts {
		t = growTable(t, max(layer+1, tLayers(t)), max(expert+1, tExperts(t)))
		d.routed.Store(t)
	}
	t.rows[layer*t.experts+expert].Add(int64(rows))
}

func tLayers(t *rowTable) int {
	if t == nil {
		return 0
	}
	return t.layers
}

func tExperts(t *rowTable) int {
	if t == nil {
		return 0
	}
	return t.experts
}

func growTable(old *rowTable, layers, experts int) *rowTable {
	t := &rowTable{layers: layers, experts: experts, rows: make([]atomic.Int64, layers*experts)}
	if old != nil {
		for l := range old.layers {
			for e := range old.experts {
				t.rows[l*experts+e].Store(old.rows[l*old.experts+e].Load())
			}
		}
	}
	return t
}

// Routed returns the rows this node's gate has routed to each expert since
// the dispatcher was made (whoever computed them: a local or remote replica
// or the fallback). Experts with no rows are absent. It may be called
// concurrently with RunExperts.
func (d *Dispatcher) Routed() map[router.ExpertID]int64 {
	out := map[router.ExpertID]int64{}
	t := d.routed.Load()
	if t == nil {
		return out
	}
	for k := range t.rows {
		if n := t.rows[k].Load(); n > 0 {
			out[router.ExpertID{Layer: k / t.experts, Index: k % t.experts}] = n
		}
	}
	return out
}

// RateMeter turns cumulative per-expert row counts into decayed rates (an
// exponentially weighted moving average of rows per second with a given
// half-life). It is pure bookkeeping, not safe for concurrent use; its
// memory is bounded by the experts ever seen.
type RateMeter struct {
	halfLife time.Duration
	last     map[router.ExpertID]int64
	rates    map[router.ExpertID]float64
	at       time.Time
}

// NewRateMeter returns a meter whose rates halve their weight every
// halfLife (<= 0: each observation replaces the rate).
func NewRateMeter(halfLife time.Duration) *RateMeter {
	return &RateMeter{halfLife: halfLife, last: map[router.ExpertID]int64{}, rates: map[router.ExpertID]float64{}}
}

// Observe records the cumulative counts at now and returns the updated
// rates (rows per second; the map is the meter's own: read it before the
// next Observe). The first call only sets the baseline. Rates below
// 1e-3 rows/s are dropped.
func (m *RateMeter) Observe(now time.Time, counts map[router.ExpertID]int64) map[router.ExpertID]float64 {
	if m.at.IsZero() {
		m.at = now
		for id, n := range counts {
			m.last[id] = n
		}
		return m.rates
	}
	if !now.After(m.at) {
		// No time passed (a coarse clock): keep the baseline, so these
		// rows count in the next interval instead of vanishing.
		return m.rates
	}
	dt := now.Sub(m.at)
	m.at = now
	alpha := 1.0
	if m.halfLife > 0 {
		alpha = 1 - math.Exp2(-float64(dt)/float64(m.halfLife))
	}
	for id, n := range counts {
		inst := float64(n-m.last[id]) / dt.Seconds()
		m.last[id] = n
		m.rates[id] += alpha * (inst - m.rates[id])
	}
	for id, r := range m.rates {
		if _, seen := counts[id]; !seen {
			r -= alpha * r
		}
		if r < 1e-3 {
			delete(m.rates, id)
		} else {
			m.rates[id] = r
		}
	}
	return m.rates
}
