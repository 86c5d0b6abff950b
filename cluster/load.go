package cluster

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/router"
	"github.com/prometheus/client_golang/prometheus"
)

// LoadConfig tunes live rebalancing: how nodes report the gating counts of
// their dispatcher and how the leader re-places experts from them. The zero
// value turns it off (no reports, no load-driven placement).
type LoadConfig struct {
	// ReportInterval is how often a node with experts (Node.StartExperts)
	// reports its per-expert rates to the map (router.OpReportLoad). A
	// report that would not change the map (rates rounded to two
	// significant digits) is skipped. 0 disables reports.
	ReportInterval time.Duration
	// HalfLife is the half-life of the reported rates (an exponentially
	// weighted moving average of rows per second); 0 reports the rate of
	// the last interval alone.
	HalfLife time.Duration
	// RebalanceInterval is how often the leader runs placement with the
	// reported load and rebalancing on (one change per round: one replica
	// moved, added or dropped). It changes nothing while the load is
	// balanced within RebalanceRatio and no expert is hot or cold. 0
	// disables load-driven placement.
	RebalanceInterval time.Duration
	// CatchUpMoves is how many changes a round may make instead of one
	// while an active node holds fewer than half its share of the replicas
	// (it joined, or came back, after the placement): a node back from a
	// restart takes its share in a few rounds, not one expert per round.
	// 0 or 1: one change per round always.
	CatchUpMoves int
	// RebalanceRatio is the max/min node load ratio that triggers a move
	// (router.PlaceInput.RebalanceRatio; 0 means its default, else >= 1).
	RebalanceRatio float64
	// HotFactor: an expert whose load is at least HotFactor times the mean
	// expert load gets one replica more than the map's replication; it
	// drops it when its load falls to HotFactor/2 times the mean
	// (router.PlaceInput.HotFactor). 0 disables hot replicas, else >= 1.
	HotFactor float64
}

// DefaultLoadConfig reports every 2 s with a 10 s half-life, rebalances
// every 10 s (up to 8 moves a round for a node far below its share) and
// gives experts at 2× the mean load an extra replica.
func DefaultLoadConfig() LoadConfig {
	return LoadConfig{ReportInterval: 2 * time.Second, HalfLife: 10 * time.Second,
		RebalanceInterval: 10 * time.Second, CatchUpMoves: 8, HotFactor: 2}
}

// Validate reports the first field out of range.
func (c LoadConfig) Validate() error {
	switch {
	case c.ReportInterval < 0 || c.HalfLife < 0 || c.RebalanceInterval < 0:
		return fmt.Errorf("%w: negative load interval", ErrInvalidConfig)
	case c.CatchUpMoves < 0:
		return fmt.Errorf("%w: load catch-up moves %d < 0", ErrInvalidConfig, c.CatchUpMoves)
	case c.RebalanceRatio != 0 && !(c.RebalanceRatio >= 1 && !math.IsInf(c.RebalanceRatio, 1)):
		return fmt.Errorf("%w: load rebalance ratio %v not in [1, inf)", ErrInvalidConfig, c.RebalanceRatio)
	case c.HotFactor != 0 && !(c.HotFactor >= 1 && !math.IsInf(c.HotFactor, 1)):
		return fmt.Errorf("%w: hot factor %v not in [1, inf)", ErrInvalidConfig, c.HotFactor)
	}
	return nil
}

// placeLoad is the load Place sees: the map's reported rates for every
// expert of the live model (0 for experts nobody reported, so that
// observed rates and Place's default of 1 are never mixed), or nil when
// nothing was reported.
func placeLoad(m *router.Map) map[router.ExpertID]float64 {
	obs := m.ExpertLoads()
	if len(obs) == 0 || m.Model == nil {
		return nil
	}
	out := make(map[router.ExpertID]float64, m.Model.Layers*m.Model.Experts)
	for l := range m.Model.Layers {
		for i := range m.Model.Experts {
			id := router.ExpertID{Layer: l, Index: i}
			out[id] = obs[id]
		}
	}
	return out
}

// handOff keeps, for each expert that has a Ready replica in cur but none
// in next, one of its Ready replicas on a serving node (appended last), so
// a move never leaves an expert without a replica to call while the new one
// loads (make before break). The kept replica is dropped by a later
// placement once the new one is Ready (placementKey counts readiness). It
// may exceed a node's capacity by that replica for as long.
func handOff(m *router.Map, next map[router.ExpertID][]router.Replica) {
	serving := func(id string) bool {
		nd, ok := m.Nodes[id]
		return ok && (nd.State == router.NodeActive || nd.State == router.NodeDraining)
	}
	ready := func(r router.Replica) bool { return r.Ready }
	for e, old := range m.Placement {
		rs := next[e]
		if slices.ContainsFunc(rs, ready) {
			continue
		}
		for _, r := range old {
			if r.Ready && serving(r.Node) && !slices.ContainsFunc(rs, func(q router.Replica) bool { return q.Node == r.Node }) {
				next[e] = append(slices.Clone(rs), r)
				break
			}
		}
	}
}

// reportLoop reports this node's gating rates to the map every
// ReportInterval until x stops.
func (x *Experts) reportLoop() {
	defer x.wg.Done()
	lc := x.n.cfg.Load
	if lc.ReportInterval <= 0 {
		return
	}
	meter := dispatch.NewRateMeter(lc.HalfLife)
	tick := time.NewTicker(lc.ReportInterval)
	defer tick.Stop()
	for {
		select {
		case <-x.stop:
			return
		case <-x.n.stopCh:
			return
		case now := <-tick.C:
			rates := meter.Observe(now, x.disp.Routed())
			x.rates.Store(ratesSnapshot(rates))
			x.report(rates)
		}
	}
}

// ratesSnapshot copies rates into a list sorted by expert.
func ratesSnapshot(rates map[router.ExpertID]float64) *[]router.ExpertLoad {
	out := make([]router.ExpertLoad, 0, len(rates))
	for id, r := range rates {
		out = append(out, router.ExpertLoad{Expert: id, RowsPerSec: r})
	}
	slices.SortFunc(out, func(a, b router.ExpertLoad) int {
		return cmp.Or(cmp.Compare(a.Expert.Layer, b.Expert.Layer), cmp.Compare(a.Expert.Index, b.Expert.Index))
	})
	return &out
}

// round2 rounds r to two significant digits, so steady load does not
// rewrite the map every interval.
func round2(r float64) float64 {
	if r <= 0 {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(r))-1)
	return math.Round(r/p) * p
}

// report proposes rates as this node's load report unless the map already
// holds the same (rounded) report.
func (x *Experts) report(rates map[router.ExpertID]float64) {
	m := x.n.fsm.Map()
	self := x.n.cfg.ID
	if _, known := m.Nodes[self]; !known {
		return
	}
	var ls []router.ExpertLoad
	for _, el := range *ratesSnapshot(rates) {
		if r := round2(el.RowsPerSec); r > 0 {
			ls = append(ls, router.ExpertLoad{Expert: el.Expert, RowsPerSec: r})
		}
	}
	if slices.Equal(ls, m.Loads[self].Experts) {
		return
	}
	ctx, cancel := context.WithTimeout(x.n.ctx, x.n.cfg.ApplyTimeout)
	defer cancel()
	err := x.n.Apply(ctx, router.Command{Op: router.OpReportLoad, NodeID: self, Load: ls, NowMS: time.Now().UnixMilli()})
	if err != nil {
		x.n.log.Debug("report expert load", "error", err)
	}
}

// CollectorTopN is how many of the hottest experts the collector exports
// one series each for.
const CollectorTopN = 8

// Collector returns a Prometheus collector of this node's expert load with
// bounded cardinality: the routed rate per layer (label layer, one series
// per layer), the CollectorTopN hottest experts (labels layer, expert),
// and the cluster-wide rate of those per the map's load reports. Register
// it where /metrics is served, e.g. in cmd:
//
//	reg := prometheus.NewRegistry()     // give it to api.Config.Registry
//	reg.MustRegister(experts.Collector())
func (x *Experts) Collector() prometheus.Collector { return (*expertCollector)(x) }

type expertCollector Experts

var (
	descLayerRate = prometheus.NewDesc("conclave:expert_layer_rows_per_second",
		"Rows this node's gate routes to the experts of a layer, per second (decayed rate).", []string{"layer"}, nil)
	descHotRate = prometheus.NewDesc("conclave:expert_hot_rows_per_second",
		"Rows this node's gate routes to one of its hottest experts, per second (decayed rate; top experts only).", []string{"layer", "expert"}, nil)
	descClusterHotRate = prometheus.NewDesc("conclave:expert_cluster_hot_rows_per_second",
		"Rows routed cluster-wide to one of the hottest experts per the map's load reports, per second (top experts only).", []string{"layer", "expert"}, nil)
	descReplicas = prometheus.NewDesc("conclave:expert_cluster_hot_replicas",
		"Replicas in the map of one of the cluster's hottest experts (top experts only).", []string{"layer", "expert"}, nil)
	descDispatch = prometheus.NewDesc("conclave:expert_dispatch_calls_total",
		"Expert calls made by this node's dispatcher, by how they were served.", []string{"kind"}, nil)
	descDispatchBytes = prometheus.NewDesc("conclave:expert_dispatch_bytes_total",
		"Activation payload bytes exchanged with other nodes.", []string{"direction"}, nil)
	descDispatchLatency = prometheus.NewDesc("conclave:expert_dispatch_layer_seconds",
		"Time to compute one layer's routed experts (all replicas, retries included).", nil, nil)
	descDispatchBusy = prometheus.NewDesc("conclave:expert_dispatch_remote_compute_seconds",
		"Time another node's expert actors spent computing each of this node's calls (one expert, or a batch of a layer's experts), by the node called: a node slow to compute shows here.", []string{"node"}, nil)
	descHosted = prometheus.NewDesc("conclave:expert_actors",
		"Expert actors running on this node.", nil, nil)
)

func (c *expertCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLayerRate, descHotRate, descClusterHotRate, descReplicas, descHosted, descDispatch, descDispatchBytes,
		descDispatchLatency, descDispatchBusy} {
		ch <- d
	}
}

func (c *expertCollector) Collect(ch chan<- prometheus.Metric) {
	x := (*Experts)(c)
	ch <- prometheus.MustNewConstMetric(descHosted, prometheus.GaugeValue, float64(len(x.host.Hosted())))
	st := x.disp.Stats()
	for kind, v := range map[string]int64{"local": st.Local, "remote": st.Remote, "retry": st.Retries,
		"timeout": st.Timeouts, "fallback": st.Fallbacks, "stale_epoch": st.Stale} {
		ch <- prometheus.MustNewConstMetric(descDispatch, prometheus.CounterValue, float64(v), kind)
	}
	ch <- prometheus.MustNewConstMetric(descDispatchBytes, prometheus.CounterValue, float64(st.BytesSent), "sent")
	ch <- prometheus.MustNewConstMetric(descDispatchBytes, prometheus.CounterValue, float64(st.BytesRecv), "received")
	lat := x.disp.Latency()
	ch <- prometheus.MustNewConstHistogram(descDispatchLatency, lat.Count, lat.Sum.Seconds(), lat.Buckets)
	m := x.n.fsm.Map()
	for node, l := range x.disp.NodeBusy(func(node string) bool { _, ok := m.Nodes[node]; return ok }) {
		ch <- prometheus.MustNewConstHistogram(descDispatchBusy, l.Count, l.Sum.Seconds(), l.Buckets, node)
	}
	var local []router.ExpertLoad
	if p := x.rates.Load(); p != nil {
		local = *p
	}
	perLayer := map[int]float64{}
	for _, el := range local {
		perLayer[el.Expert.Layer] += el.RowsPerSec
	}
	for l, r := range perLayer {
		ch <- prometheus.MustNewConstMetric(descLayerRate, prometheus.GaugeValue, r, strconv.Itoa(l))
	}
	for _, el := range topN(local, CollectorTopN) {
		ch <- prometheus.MustNewConstMetric(descHotRate, prometheus.GaugeValue, el.RowsPerSec,
			strconv.Itoa(el.Expert.Layer), strconv.Itoa(el.Expert.Index))
	}
	var cl []router.ExpertLoad
	for id, r := range m.ExpertLoads() {
		cl = append(cl, router.ExpertLoad{Expert: id, RowsPerSec: r})
	}
	for _, el := range topN(cl, CollectorTopN) {
		l, e := strconv.Itoa(el.Expert.Layer), strconv.Itoa(el.Expert.Index)
		ch <- prometheus.MustNewConstMetric(descClusterHotRate, prometheus.GaugeValue, el.RowsPerSec, l, e)
		ch <- prometheus.MustNewConstMetric(descReplicas, prometheus.GaugeValue, float64(len(m.Placement[el.Expert])), l, e)
	}
}

// topN returns the n highest rates, ties by (layer, index).
func topN(ls []router.ExpertLoad, n int) []router.ExpertLoad {
	ls = slices.Clone(ls)
	slices.SortFunc(ls, func(a, b router.ExpertLoad) int {
		return cmp.Or(cmp.Compare(b.RowsPerSec, a.RowsPerSec), cmp.Compare(a.Expert.Layer, b.Expert.Layer), cmp.Compare(a.Expert.Index, b.Expert.Index))
	})
	return ls[:min(n, len(ls))]
}
