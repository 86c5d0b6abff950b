package router

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

// DefaultRebalanceRatio is the max/min node load ratio above which a
// rebalancing Place moves replicas.
const DefaultRebalanceRatio = 1.25

// maxPlaceExperts bounds Layers*Experts so nonsense input can't exhaust memory.
const maxPlaceExperts = 1 << 20

// ErrBadPlaceInput reports nonsense input to Place.
var ErrBadPlaceInput = errors.New("router: bad placement input")

// PlaceInput is everything Place decides from.
type PlaceInput struct {
	Nodes           []Node                 // candidates; only active nodes receive replicas (draining/dead/joining get none)
	Layers, Experts int                    // the model's shape: experts (l, i) for 0 <= l < Layers, 0 <= i < Experts
	ExpertBytes     int64                  // bytes per expert replica
	Replication     int                    // wanted replicas per expert (capped at the number of eligible nodes); 0 means 1
	Load            map[ExpertID]float64   // observed relative load per expert (missing = 1); >= 0
	Current         map[ExpertID][]Replica // existing placement (kept where still valid)

	// Rebalance allows moving valid replicas from the most to the least
	// loaded node while the max/min node load ratio exceeds RebalanceRatio,
	// at most MaxMoves replicas per call.
	Rebalance      bool
	RebalanceRatio float64 // >= 1; 0 means DefaultRebalanceRatio
	MaxMoves       int     // >= 0; 0 means one per eligible node

	// HotFactor > 0 enables hot replicas: an expert may have one replica
	// more than the base replication (bounded by eligible nodes and
	// capacity). Without Rebalance, experts keep a valid extra replica they
	// already have and none is added or dropped. With Rebalance, up to
	// HotChanges experts change their replica count per call: first a cold
	// expert (load <= HotFactor/2 × the mean expert load) with an extra
	// replica drops it (its last listed one), then a hot expert (load >=
	// HotFactor × the mean, and > 0) without one gains one, coldest and
	// hottest first. Each such change uses up one of MaxMoves (so at most
	// MaxMoves of them when MaxMoves > 0). 0 disables
	// (extras are trimmed like any surplus replica).
	HotFactor  float64 // 0, or in [1, inf)
	HotChanges int     // >= 0; 0 means 1
}

// PlaceResult is Place's answer.
type PlaceResult struct {
	Placement map[ExpertID][]Replica // experts with no replica are absent
	Moves     int                    // replicas added on a node that didn't have them
	Unplaced  []ExpertID             // experts left with no replica or fewer than wanted (no node could fit them), by (layer, index)
}

// PlaceInput returns the input for re-placing m's live model, with m's nodes,
// replication and current placement. Load may be nil.
func (m *Map) PlaceInput(load map[ExpertID]float64) PlaceInput {
	in := PlaceInput{Replication: m.Replication, Load: load, Current: m.Placement}
	for _, n := range m.Nodes {
		if !m.runsLive(n) {
			continue // runs another model: it cannot host this one's experts
		}
		in.Nodes = append(in.Nodes, n)
	}
	slices.SortFunc(in.Nodes, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	if m.Model != nil {
		in.Layers, in.Experts, in.ExpertBytes = m.Model.Layers, m.Model.Experts, m.Model.ExpertBytes
	}
	return in
}

// placeNode is a node's running account during Place. Experts are indexed
// densely: k = layer*Experts + index.
type placeNode struct {
	id       string
	device   string          // where new replicas go: the first device, "cpu" if none
	devices  map[string]bool // devices a kept replica may stay on
	capacity int64           // bytes; <= 0 unlimited
	weight   float64         // relative capacity, in (0, 1]
	used     int64           // bytes placed
	load     float64         // sum of Load over hosted experts
	count    int             // replicas hosted
	has      []uint64        // bitset over dense expert indices
}

func (n *placeNode) fits(bytes int64) bool { return n.capacity <= 0 || n.used+bytes <= n.capacity }
func (n *placeNode) score() float64        { return n.load / n.weight }
func (n *placeNode) holds(k int) bool      { return n.has[k>>6]&(1<<(k&63)) != 0 }

func (n *placeNode) add(k int, load float64, bytes int64) {
	n.has[k>>6] |= 1 << (k & 63)
	n.used += bytes
	n.load += load
	n.count++
}

func (n *placeNode) remove(k int, load float64, bytes int64) {
	n.has[k>>6] &^= 1 << (k & 63)
	n.used -= bytes
	n.load -= load
	n.count--
}

// Place computes an expert placement. It is pure and deterministic (the
// order of in.Nodes and of map iteration does not matter) and moves as few
// replicas as it can:
//
//  1. Keep, in (layer, index) order, each current replica on an active node
//     that still has room for it, up to the wanted count (readiness kept).
//     Replicas on other nodes, duplicates and extras are dropped.
//  2. Add missing replicas, heaviest expert first, each on the active node
//     not holding that expert, with room for it, whose projected load
//     (load of its experts plus this one, over its relative capacity) is
//     lowest; ties go to fewer replicas per capacity, then the lower node
//     ID. New replicas are not Ready and sit on the node's first device.
//  0. With HotFactor: decide each expert's replica count, base or base+1,
//     changing at most HotChanges experts' counts (see HotFactor); the
//     rest of Place uses those counts, and a replica counts a 1/count share
//     of its expert's load.
//  3. Only if in.Rebalance: while the max/min node load ratio exceeds
//     RebalanceRatio, move the replica whose move lowers the heaviest
//     node's load the most to the lightest node, at most MaxMoves times.
//
// When capacity is short, steps 1 and 2 give no expert a further replica
// while that would take the last room for the first replica of another, so
// capacity too small for the wanted replication still places every expert
// once where it can; what cannot be placed at all stays out of the
// placement and in Unplaced.
//
// It returns ErrBadPlaceInput for negative sizes, duplicate or empty node
// IDs, or a negative or non-finite load.
func Place(in PlaceInput) (PlaceResult, error) {
	if err := in.check(); err != nil {
		return PlaceResult{}, err
	}
	total := in.Layers * in.Experts
	experts := make([]ExpertID, total) // dense index -> expert, in (layer, index) order
	loads := make([]float64, total)    // dense index -> load
	for k := range experts {
		e := ExpertID{Layer: k / in.Experts, Index: k % in.Experts}
		experts[k] = e
		loads[k] = 1
		if l, ok := in.Load[e]; ok {
			loads[k] = l
		}
	}

	// Eligible nodes, by ID.
	var nodes []*placeNode
	byID := map[string]*placeNode{}
	maxCap := int64(0)
	for _, n := range in.Nodes {
		if n.State == NodeActive && n.Capacity > maxCap {
			maxCap = n.Capacity
		}
	}
	for _, n := range in.Nodes {
		if n.State != NodeActive {
			continue
		}
		pn := &placeNode{id: n.ID, device: "cpu", devices: map[string]bool{}, capacity: n.Capacity, weight: 1,
			has: make([]uint64, (total+63)/64)}
		if len(n.Devices) > 0 {
			pn.device = n.Devices[0].Name
			for _, d := range n.Devices {
				pn.devices[d.Name] = true
			}
		} else {
			pn.devices["cpu"] = true
		}
		if n.Capacity > 0 {
			pn.weight = float64(n.Capacity) / float64(maxCap)
		}
		nodes = append(nodes, pn)
		byID[n.ID] = pn
	}
	slices.SortFunc(nodes, func(a, b *placeNode) int { return cmp.Compare(a.id, b.id) })
	want := min(max(in.Replication, 1), len(nodes))
	wants, hotChanges := hotTargets(in, experts, loads, byID, want, len(nodes))
	if slices.ContainsFunc(wants, func(w int) bool { return w != want }) { // a replica carries its share of its expert's load
		for k := range loads {
			loads[k] = loads[k] * float64(want) / float64(wants[k])
		}
	}
	placement := make([][]Replica, total) // dense index -> replicas
	sumWant := 0
	for _, w := range wants {
		sumWant += w
	}
	backing := make([]Replica, sumWant) // one allocation; each expert's slice is capped at its want
	off := 0
	for k := range placement {
		placement[k] = backing[off : off : off+wants[k]]
		off += wants[k]
	}

	// 1. Keep what is still valid, in rounds: round r keeps up to r
	// replicas of every expert (r = 1 … want, then want+1 for hot extras),
	// so extras never take room a base replica needs.
	p := newPlacer(in, experts, loads, nodes, byID, placement)
	for round := 1; round <= want+1; round++ {
		p.keep(func(k int) int { return min(wants[k], round) })
	}
	// 2. Add what is missing: heaviest first, base replicas before extras.
	// A further replica of an expert waits while it would take the last
	// room for the first replica of another; those go last, a round at a
	// time. With room for everything this is plain heaviest-first.
	addMissing := func() {
		deferred := false
		for pass := range 2 {
			deferred = p.add(func(k int) int { return min(wants[k], want+pass) }) || deferred
		}
		if deferred {
			for round := 2; round <= want+1; round++ {
				p.add(func(k int) int { return min(wants[k], round) })
			}
		}
	}
	addMissing()

	// 3. Rebalance, bounded.
	if in.Rebalance && len(nodes) > 1 {
		ratio := in.RebalanceRatio
		if ratio == 0 {
			ratio = DefaultRebalanceRatio
		}
		maxMoves := in.MaxMoves
		if maxMoves == 0 {
			maxMoves = len(nodes)
		}
		moved := false
		for range max(maxMoves-hotChanges, 0) {
			if !rebalanceOnce(nodes, placement, loads, ratio, in.ExpertBytes) {
				break
			}
			moved = true
		}
		if moved {
			// A move can free room on a node that already held every
			// expert it could take: fill what is still missing.
			addMissing()
		}
	}

	res := PlaceResult{Placement: make(map[ExpertID][]Replica, total)}
	for k, e := range experts {
		rs := placement[k]
		if len(rs) == 0 || len(rs) < want {
			res.Unplaced = append(res.Unplaced, e)
		}
		if len(rs) == 0 {
			continue
		}
		res.Placement[e] = rs
		for _, r := range rs {
			if !slices.ContainsFunc(in.Current[e], func(c Replica) bool { return c.Node == r.Node }) {
				res.Moves++
			}
		}
	}
	return res, nil
}

// placer is the running state of Place's steps 1 and 2.
type placer struct {
	in        PlaceInput
	experts   []ExpertID            // dense index -> expert
	loads     []float64             // dense index -> load
	nodes     []*placeNode          // eligible, by ID
	byID      map[string]*placeNode // eligible
	placement [][]Replica           // dense index -> replicas
	bare      int                   // experts with no replica yet
	slots     int64                 // free replica slots over all nodes; < 0: unlimited
}

func newPlacer(in PlaceInput, experts []ExpertID, loads []float64, nodes []*placeNode, byID map[string]*placeNode, placement [][]Replica) *placer {
	p := &placer{in: in, experts: experts, loads: loads, nodes: nodes, byID: byID, placement: placement, bare: len(experts)}
	for _, n := range nodes {
		if n.capacity <= 0 || in.ExpertBytes == 0 {
			p.slots = -1
			break
		}
		p.slots += n.capacity / in.ExpertBytes // nothing is placed yet
	}
	return p
}

// spare reports whether one more replica of an expert that already has one
// still leaves room for the first replica of every expert that has none.
// Any node with room can take a first replica (no node holds it), so free
// slots over all nodes are what counts.
func (p *placer) spare() bool { return p.bare == 0 || p.slots < 0 || p.slots > int64(p.bare) }

// place records replica r of expert k on node n.
func (p *placer) place(k int, n *placeNode, r Replica) {
	if len(p.placement[k]) == 0 {
		p.bare--
	}
	if p.slots > 0 {
		p.slots-- // every replica has the same size: one slot on a finite node
	}
	n.add(k, p.loads[k], p.in.ExpertBytes)
	p.placement[k] = append(p.placement[k], r)
}

// keep keeps, in (layer, index) order, current replicas on active nodes
// with room until each expert k has limit(k) (Place's step 1).
func (p *placer) keep(limit func(int) int) {
	for k, e := range p.experts {
		for _, r := range p.in.Current[e] {
			if len(p.placement[k]) >= limit(k) || (len(p.placement[k]) > 0 && !p.spare()) {
				break
			}
			n := p.byID[r.Node]
			if n == nil || n.holds(k) || !n.fits(p.in.ExpertBytes) {
				continue
			}
			if !n.devices[r.Device] { // the device went away: reload on the node's default one
				r.Device, r.Ready = n.device, false
			}
			p.place(k, n, r)
		}
	}
}

// add adds replicas, heaviest expert first, until each expert k has
// limit(k), each on the node with room and the lowest projected load
// (Place's step 2). It reports whether it left a further replica out to
// spare room for first replicas.
func (p *placer) add(limit func(int) int) (deferred bool) {
	var missing []int
	for k := range p.experts {
		if len(p.placement[k]) < limit(k) {
			missing = append(missing, k)
		}
	}
	slices.SortFunc(missing, func(a, b int) int {
		if c := cmp.Compare(p.loads[b], p.loads[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, k := range missing {
		for len(p.placement[k]) < limit(k) {
			if len(p.placement[k]) > 0 && !p.spare() {
				deferred = true
				break
			}
			var best *placeNode
			var bestLoad, bestCount float64
			for _, n := range p.nodes {
				if n.holds(k) || !n.fits(p.in.ExpertBytes) {
					continue
				}
				pl := (n.load + p.loads[k]) / n.weight
				pc := float64(n.count+1) / n.weight
				if best == nil || pl < bestLoad || (pl == bestLoad && pc < bestCount) {
					best, bestLoad, bestCount = n, pl, pc
				}
			}
			if best == nil {
				break
			}
			p.place(k, best, Replica{Node: best.id, Device: best.device})
		}
	}
	return deferred
}

// hotTargets returns each expert's wanted replica count (base, or base+1
// for hot replicas; see PlaceInput.HotFactor) and how many experts changed
// their count from the current placement's. byID holds the eligible nodes.
func hotTargets(in PlaceInput, experts []ExpertID, loads []float64, byID map[string]*placeNode, base, eligible int) ([]int, int) {
	wants := make([]int, len(experts))
	for k := range wants {
		wants[k] = base
	}
	if in.HotFactor <= 0 || base >= eligible || len(experts) == 0 {
		return wants, 0
	}
	// Keep valid extras: replicas on eligible nodes, one per node.
	for k, e := range experts {
		valid := 0
		var seen []string
		for _, r := range in.Current[e] {
			if byID[r.Node] != nil && !slices.Contains(seen, r.Node) {
				seen = append(seen, r.Node)
				valid++
			}
		}
		if valid > base {
			wants[k] = base + 1
		}
	}
	if !in.Rebalance {
		return wants, 0
	}
	sum := 0.0
	for _, l := range loads {
		sum += l
	}
	mean := sum / float64(len(loads))
	var cold, hot []int
	for k, l := range loads {
		switch {
		case wants[k] > base && l <= in.HotFactor*mean/2:
			cold = append(cold, k)
		case wants[k] == base && l > 0 && l >= in.HotFactor*mean:
			hot = append(hot, k)
		}
	}
	slices.SortFunc(cold, func(a, b int) int { return cmp.Or(cmp.Compare(loads[a], loads[b]), cmp.Compare(a, b)) })
	slices.SortFunc(hot, func(a, b int) int { return cmp.Or(cmp.Compare(loads[b], loads[a]), cmp.Compare(a, b)) })
	budget := in.HotChanges
	if budget == 0 {
		budget = 1
	}
	if in.MaxMoves > 0 {
		budget = min(budget, in.MaxMoves)
	}
	changes := 0
	for _, k := range append(cold, hot...) {
		if changes == budget {
			break
		}
		if wants[k] > base {
			wants[k] = base
		} else {
			wants[k] = base + 1
		}
		changes++
	}
	return wants, changes
}

// rebalanceOnce moves one replica from the most to the least loaded node if
// their load ratio exceeds ratio and some move strictly lowers the larger of
// the two loads. It reports whether it moved one.
func rebalanceOnce(nodes []*placeNode, placement [][]Replica, loads []float64, ratio float64, bytes int64) bool {
	hi, lo := nodes[0], nodes[0]
	for _, n := range nodes[1:] { // nodes are sorted by ID: ties keep the lower ID
		if n.score() > hi.score() {
			hi = n
		}
		if n.score() < lo.score() {
			lo = n
		}
	}
	if hi == lo || hi.score() <= lo.score()*ratio || !lo.fits(bytes) {
		return false
	}
	best, bestMax := -1, hi.score()
	for k := range placement { // in (layer, index) order: ties keep the first
		if !hi.holds(k) || lo.holds(k) {
			continue
		}
		if after := max((hi.load-loads[k])/hi.weight, (lo.load+loads[k])/lo.weight); after < bestMax {
			best, bestMax = k, after
		}
	}
	if best < 0 {
		return false
	}
	rs := placement[best] // owned by Place: safe to modify
	i := slices.IndexFunc(rs, func(r Replica) bool { return r.Node == hi.id })
	rs[i] = Replica{Node: lo.id, Device: lo.device}
	hi.remove(best, loads[best], bytes)
	lo.add(best, loads[best], bytes)
	return true
}

func (in *PlaceInput) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadPlaceInput, fmt.Sprintf(format, args...))
	}
	switch {
	case in.Layers < 0 || in.Experts < 0:
		return bad("negative model shape %dx%d", in.Layers, in.Experts)
	case in.Layers > 0 && in.Experts > maxPlaceExperts/in.Layers:
		return bad("%dx%d experts is too many", in.Layers, in.Experts)
	case in.ExpertBytes < 0:
		return bad("negative expert size %d", in.ExpertBytes)
	case in.Replication < 0:
		return bad("negative replication %d", in.Replication)
	case in.MaxMoves < 0:
		return bad("negative max moves %d", in.MaxMoves)
	case in.RebalanceRatio != 0 && !(in.RebalanceRatio >= 1 && !math.IsInf(in.RebalanceRatio, 1)):
		return bad("rebalance ratio %v not in [1, inf)", in.RebalanceRatio)
	case in.HotFactor != 0 && !(in.HotFactor >= 1 && !math.IsInf(in.HotFactor, 1)):
		return bad("hot factor %v not in [1, inf)", in.HotFactor)
	case in.HotChanges < 0:
		return bad("negative hot changes %d", in.HotChanges)
	}
	seen := map[string]bool{}
	for _, n := range in.Nodes {
		if n.ID == "" {
			return bad("node without an id")
		}
		if seen[n.ID] {
			return bad("node %q listed twice", n.ID)
		}
		seen[n.ID] = true
	}
	for e, l := range in.Load {
		if l < 0 || math.IsNaN(l) || math.IsInf(l, 0) {
			return bad("load %v of expert %v", l, e)
		}
	}
	return nil
}
