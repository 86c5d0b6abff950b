package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/raft"
)

// pilot is the leader-only state of the loop. It is owned by the loop
// goroutine and reset whenever this node (re)gains leadership.
type pilot struct {
	deadSince    map[string]time.Time // map node → when this leader first saw it dead
	missingSince map[string]time.Time // map node never seen by memberlist → first noticed
	placedKey    uint64               // placementKey of the map last placed
	placedOK     bool
	unreached    map[string]time.Time // non-voter → first seen unreached by Raft; zero once warned
	replSet      bool                 // replication from Config applied (bootstrapping leader only)
}

// loop runs on every node for the node's lifetime. On followers it only
// maintains local housekeeping (peers file, rejoin); on the leader it is the
// autopilot: membership, Raft configuration, placement, session expiry.
func (n *Node) loop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.ReconcileInterval)
	defer tick.Stop()
	expire := time.NewTicker(n.cfg.SessionExpiryInterval)
	defer expire.Stop()
	var rebalC <-chan time.Time // load-driven placement, slow cadence
	if iv := n.cfg.Load.RebalanceInterval; iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		rebalC = t.C
	}
	var (
		p        *pilot
		placeC   <-chan time.Time
		seenVer  uint64
		lastJoin time.Time
	)
	leaderCh := n.raft.LeaderCh()
	for {
		changed := n.fsm.Changed()
		doExpire := false
		select {
		case <-n.stopCh:
			return
		case <-leaderCh:
		case <-n.kickCh:
		case <-changed:
		case <-tick.C:
		case <-expire.C:
			doExpire = true
		case <-rebalC:
			// By the reported load; before any is reported (an idle
			// cluster), by replica count per capacity, so nodes that joined
			// after the placement take their share instead of staying empty.
			if p != nil {
				moves := 1
				if n.cfg.Load.CatchUpMoves > 1 && belowShare(n.fsm.Map()) {
					moves = n.cfg.Load.CatchUpMoves
				}
				if _, err := n.placeWith(true, moves); err != nil {
					n.log.Warn("load rebalancing failed", "error", err)
				}
			}
		case <-placeC:
			placeC = nil
			if p != nil {
				m := n.fsm.Map()
				key := placementKey(m)
				if _, err := n.place(false); err != nil {
					n.log.Warn("placement failed", "error", err)
				} else {
					p.placedKey, p.placedOK = key, true
				}
			}
		}

		// Housekeeping on every node.
		nodes := n.fsm.Map().Nodes
		n.members.forget(func(id string) bool { _, in := nodes[id]; return in })
		tab, ver := n.members.snapshot()
		if ver != seenVer {
			seenVer = ver
			n.savePeers(tab)
		}
		if n.ml.NumMembers() <= 1 && time.Since(lastJoin) > 2*time.Second {
			if c := n.rejoinCandidates(); len(c) > 0 {
				lastJoin = time.Now()
				n.wg.Add(1)
				go func() { // Join blocks up to the TCP timeout per address
					defer n.wg.Done()
					if k, err := n.ml.Join(c); err == nil {
						n.log.Info("rejoined gossip", "contacted", k)
					} else {
						n.rejoinFailed(err)
					}
				}()
			}
		}

		n.noteRaftReached()

		if n.raft.State() != raft.Leader {
			if p != nil {
				n.log.Info("lost leadership")
			}
			p, placeC = nil, nil
			continue
		}
		if p == nil {
			// New leader: make sure the FSM has applied everything committed
			// before judging the map.
			if err := waitFuture(n.ctx, n.raft.Barrier(n.cfg.ApplyTimeout)); err != nil {
				n.log.Warn("leader barrier", "error", err)
				continue
			}
			p = &pilot{deadSince: map[string]time.Time{}, missingSince: map[string]time.Time{}, unreached: map[string]time.Time{}}
			n.log.Info("leading", "term", n.raft.CurrentTerm(), "epoch", n.fsm.Map().Epoch)
		}
		if n.boot && !p.replSet {
			if err := n.applyLocalCmd(router.Command{Op: router.OpSetReplication, Replication: n.cfg.Replication}); err == nil {
				p.replSet = true
				n.boot = false
			}
		}
		n.reconcile(p, tab)
		if doExpire {
			n.expireSessions()
		}
		if key := placementKey(n.fsm.Map()); (!p.placedOK || key != p.placedKey) && placeC == nil {
			placeC = time.After(n.cfg.PlacementDebounce)
		}
	}
}

// reconcile brings the Raft configuration and the map's node list in line
// with memberlist. Only the leader calls it.
func (n *Node) reconcile(p *pilot, tab map[string]member) {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return
	}
	servers := map[string]raft.Server{}
	for _, s := range cf.Configuration().Servers {
		servers[string(s.ID)] = s
	}
	alive := func(id string) bool { return id == n.cfg.ID || tab[id].State == GossipAlive }
	var ids []string
	for id, m := range tab {
		if m.State == GossipAlive {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)

	// Raft: add new members as non-voters and promote those Raft has
	// reached while fewer than MaxVoters live voters remain. A member
	// gossip admits is not yet one Raft can talk to (a certificate from
	// another CA, a wrong Raft address); made a voter at once, it would
	// count toward every quorum, and a one-node cluster would lose its
	// leader for good.
	aliveVoters := 0
	for id, s := range servers {
		if s.Suffrage == raft.Voter && alive(id) {
			aliveVoters++
		}
	}
	for _, id := range ids {
		s, in := servers[id]
		reached := tab[id].Meta.RaftReached || id == n.cfg.ID
		if in && s.Suffrage != raft.Voter && !reached {
			n.warnUnreached(p, id, tab[id].Meta.Raft)
		} else {
			delete(p.unreached, id)
		}
		switch {
		case in && s.Suffrage == raft.Voter:
			continue
		case in && aliveVoters < n.cfg.MaxVoters && reached:
			if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(tab[id].Meta.Raft), 0, n.cfg.ApplyTimeout).Error(); err != nil {
				n.log.Warn("add voter", "member", id, "error", err)
				continue
			}
			aliveVoters++
			servers[id] = raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(tab[id].Meta.Raft), Suffrage: raft.Voter}
			n.log.Info("promoted raft non-voter to voter", "member", id)
		case !in:
			if err := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(tab[id].Meta.Raft), 0, n.cfg.ApplyTimeout).Error(); err != nil {
				n.log.Warn("add non-voter", "member", id, "error", err)
				continue
			}
			servers[id] = raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(tab[id].Meta.Raft), Suffrage: raft.Nonvoter}
			n.log.Info("added raft non-voter", "member", id)
		}
	}
	// A voter that comes back after a non-voter was promoted in its place
	// leaves one live voter too many: demote the extras (never this node,
	// the leader), the last ids first, so bounces do not grow the voters
	// to every node (or to an even count).
	for i := len(ids) - 1; i >= 0 && aliveVoters > n.cfg.MaxVoters; i-- {
		id := ids[i]
		if s, in := servers[id]; !in || s.Suffrage != raft.Voter || id == n.cfg.ID {
			continue
		}
		if err := n.raft.DemoteVoter(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error(); err != nil {
			n.log.Warn("demote voter", "member", id, "error", err)
			continue
		}
		aliveVoters--
		s := servers[id]
		s.Suffrage = raft.Nonvoter
		servers[id] = s
		n.log.Info("demoted raft voter", "member", id, "voters", aliveVoters)
	}

	// Map: upsert live members (keeping a draining state), mark the rest
	// dead and remove them after the grace period.
	m := n.fsm.Map()
	now := time.Now()
	for _, id := range ids {
		mem := tab[id]
		want := mem.Meta.node(mem.Addr, mem.Port, router.NodeActive)
		want.Voter = servers[id].Suffrage == raft.Voter
		if old, ok := m.Nodes[id]; ok && old.State == router.NodeDraining {
			want.State = router.NodeDraining
		}
		delete(p.deadSince, id)
		delete(p.missingSince, id)
		if old, ok := m.Nodes[id]; ok && sameNode(old, want) {
			continue
		}
		if err := n.applyLocalCmd(router.Command{Op: router.OpUpsertNode, Node: &want, NowMS: now.UnixMilli()}); err != nil {
			n.log.Warn("upsert node", "member", id, "error", err)
		}
	}
	var gone []string
	for id := range m.Nodes {
		if !alive(id) {
			gone = append(gone, id)
		}
	}
	for id := range servers {
		if _, inMap := m.Nodes[id]; !inMap && !alive(id) {
			gone = append(gone, id) // a Raft server the map no longer has
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		mem, known := tab[id]
		node, inMap := m.Nodes[id]
		switch {
		case known && mem.State == GossipLeft:
			n.log.Info("removing node that left", "member", id)
			n.removeNodeLogged(id)
			continue
		case known || (inMap && node.State == router.NodeDead) || !inMap:
			// dead (or already marked dead by an earlier leader)
		default:
			first, ok := p.missingSince[id]
			if !ok {
				p.missingSince[id] = now
				first = now
			}
			if now.Sub(first) < n.cfg.MissingGrace {
				continue
			}
		}
		if inMap && node.State != router.NodeDead {
			n.log.Info("marking node dead", "member", id)
			if err := n.applyLocalCmd(router.Command{Op: router.OpSetNodeState, NodeID: id, State: router.NodeDead, NowMS: now.UnixMilli()}); err != nil {
				n.log.Warn("mark dead", "member", id, "error", err)
			}
		}
		first, ok := p.deadSince[id]
		if !ok {
			p.deadSince[id] = now
			first = now
		}
		if now.Sub(first) >= n.cfg.DeadGrace {
			n.log.Info("removing dead node after grace period", "member", id, "dead_for", now.Sub(first).Round(time.Millisecond))
			n.removeNodeLogged(id)
			delete(p.deadSince, id)
		}
	}

	// Sessions homed on draining nodes move to active ones.
	m = n.fsm.Map()
	for id, node := range m.Nodes {
		if node.State == router.NodeDraining && len(m.SessionsOn(id)) > 0 && len(m.ActiveNodes()) > 0 {
			if err := n.applyLocalCmd(router.Command{Op: router.OpMoveSessions, NodeID: id}); err != nil {
				n.log.Warn("move sessions", "member", id, "error", err)
			}
		}
	}
}

// unreachedWarnAfter is how long a non-voter may go without Raft reaching
// it before the leader says so.
const unreachedWarnAfter = 15 * time.Second

// warnUnreached logs, once per leadership, a member that gossips but that
// Raft has not reached for unreachedWarnAfter: it stays a non-voter.
func (n *Node) warnUnreached(p *pilot, id, addr string) {
	first, ok := p.unreached[id]
	switch {
	case !ok:
		p.unreached[id] = time.Now()
	case !first.IsZero() && time.Since(first) >= unreachedWarnAfter:
		p.unreached[id] = time.Time{}
		n.log.Warn("Raft has not reached a member that gossips; it stays a non-voter (check that its certificate comes from this cluster's CA and that its raft address is reachable)",
			"member", id, "raft", addr, "for", time.Since(first).Round(time.Second))
	}
}

// updateMeta changes this node's gossiped metadata and announces it
// (asynchronously; nothing waits for the gossip).
func (n *Node) updateMeta(change func(*NodeMeta)) {
	m := n.meta.get()
	change(&m)
	if err := n.meta.set(m); err != nil {
		n.log.Warn("node metadata", "error", err)
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.ml.UpdateNode(n.cfg.ApplyTimeout); err != nil {
			n.log.Debug("gossip metadata update", "error", err)
		}
	}()
}

// noteRaftReached gossips, once, that a Raft leader has reached this node
// and it has applied the log as far as the leader had committed it (or
// that it leads): the leader promotes non-voters only then, so a new voter
// neither blocks commits it cannot receive nor holds them up catching up.
func (n *Node) noteRaftReached() {
	if n.meta.get().RaftReached {
		return
	}
	if n.raft.State() == raft.Leader {
		n.updateMeta(func(m *NodeMeta) { m.RaftReached = true })
		return
	}
	// A follower: once a leader has reached it, ask the leader how far the
	// map is (a follower learns the commit index a batch at a time), one
	// question at a time, and tell once its own map is there.
	if n.raft.LastContact().IsZero() || !n.reachCheck.CompareAndSwap(false, true) {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.reachCheck.Store(false)
		addr := n.leaderHTTP()
		if addr == "" {
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ApplyTimeout)
		defer cancel()
		epoch, err := n.leaderEpoch(ctx, addr)
		if err != nil {
			return // asked again on the loop's next turn
		}
		// A follower applies what the leader had committed a batch later
		// (it learns the commit index with the next append): wait for the
		// epoch, within ctx, instead of comparing at once, which under a
		// steady stream of writes could find the map a batch behind every
		// time and leave the node a non-voter.
		if n.waitApplied(ctx, func(m *router.Map) bool { return m.Epoch >= epoch }).Epoch < epoch {
			return
		}
		n.updateMeta(func(m *NodeMeta) { m.RaftReached = true })
	}()
}

// leaderEpoch asks the leader at addr for its map's epoch with everything
// committed applied (GET /admin/v1/epoch). A leader of a build without
// that route (a rolling upgrade) answers 404; its map's epoch then serves
// (GET /admin/v1/map, without the barrier: what it has applied).
func (n *Node) leaderEpoch(ctx context.Context, addr string) (uint64, error) {
	ac := &AdminClient{Base: "http://" + addr, HTTP: n.client}
	epoch, err := ac.Epoch(ctx)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		m, err := ac.Map(ctx)
		if err != nil {
			return 0, err
		}
		return m.Epoch, nil
	}
	return epoch, err
}

// WaitCaughtUp waits until this node's map is the cluster's as of now, not
// only what its data dir restored: as a follower, until its map has
// reached the epoch the leader's had with everything committed applied
// (asked of the leader: a follower only learns the commit index a batch of
// entries at a time); as the leader, until everything committed is
// applied. A restarted node reads its map only after this (which model is
// live, what is placed here).
func (n *Node) WaitCaughtUp(ctx context.Context) error {
	for {
		if n.raft.State() == raft.Leader {
			if err := waitFuture(ctx, n.raft.Barrier(n.cfg.ApplyTimeout)); err == nil {
				return nil
			}
		} else if addr := n.leaderHTTP(); addr != "" {
			cctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
			epoch, err := n.leaderEpoch(cctx, addr)
			cancel()
			if err == nil {
				n.waitApplied(ctx, func(m *router.Map) bool { return m.Epoch >= epoch })
				if n.fsm.Map().Epoch >= epoch {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopCh:
			return ErrStopped
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *Node) removeNodeLogged(id string) {
	if err := n.removeNode(id); err != nil {
		n.log.Warn("remove node", "member", id, "error", err)
	}
}

// removeNode drops id from the Raft configuration and the map. Leader only.
func (n *Node) removeNode(id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if id == n.cfg.ID {
		return fmt.Errorf("%w: the leader cannot remove itself; transfer leadership first", ErrNotLeader)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return translateRaftErr(err)
	}
	if _, ok := n.fsm.Map().Nodes[id]; !ok {
		return nil
	}
	err := n.applyLocalCmd(router.Command{Op: router.OpRemoveNode, NodeID: id, NowMS: time.Now().UnixMilli()})
	if errors.Is(err, router.ErrUnknownNode) {
		return nil
	}
	return err
}

// sameNode compares two node records ignoring UpdatedMS.
func sameNode(a, b router.Node) bool {
	a.UpdatedMS, b.UpdatedMS = 0, 0
	if reflect.DeepEqual(a, b) {
		return true
	}
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// placementKey fingerprints what placement depends on: the model's shape,
// replication, active nodes with their capacity and devices, and replicas
// that sit on nodes no longer active. The leader re-places when it changes.
func placementKey(m *router.Map) uint64 {
	h := fnv.New64a()
	if m.Model != nil {
		fmt.Fprintf(h, "model %s %d %d %d;", m.Model.Digest, m.Model.Layers, m.Model.Experts, m.Model.ExpertBytes)
	}
	fmt.Fprintf(h, "rep %d;", m.Replication)
	for _, nd := range m.ActiveNodes() {
		fmt.Fprintf(h, "node %s %d %s", nd.ID, nd.Capacity, nd.Serving)
		for _, d := range nd.Devices {
			fmt.Fprintf(h, " %s", d.Name)
		}
		h.Write([]byte{';'})
	}
	var stale []string
	for _, pe := range m.PlacementList() {
		for _, r := range pe.Replicas {
			if nd, ok := m.Nodes[r.Node]; !ok || nd.State != router.NodeActive {
				stale = append(stale, r.Node)
			}
		}
	}
	slices.Sort(stale)
	fmt.Fprintf(h, "stale %v;", slices.Compact(stale))
	// Readiness: a replica kept for a hand-off (see handOff) is dropped by
	// the placement that runs once its successor is ready.
	ready := 0
	for _, rs := range m.Placement {
		for _, r := range rs {
			if r.Ready {
				ready++
			}
		}
	}
	fmt.Fprintf(h, "ready %d", ready)
	return h.Sum64()
}

// belowShare reports whether an active node that can host the live
// model's experts, and has room for one more, holds fewer than half its
// share of the replicas: one that joined or came back after the placement.
// Shares follow capacity, as Place weighs nodes (0: no limit, counted as
// the largest).
func belowShare(m *router.Map) bool {
	in := m.PlaceInput(nil)
	var nodes []router.Node
	var maxCap int64
	for _, nd := range in.Nodes {
		if nd.State == router.NodeActive {
			nodes = append(nodes, nd)
			maxCap = max(maxCap, nd.Capacity)
		}
	}
	if len(nodes) < 2 {
		return false
	}
	per := map[string]int{}
	total := 0
	for _, rs := range m.Placement {
		for _, r := range rs {
			per[r.Node]++
			total++
		}
	}
	weight := func(nd router.Node) float64 {
		if nd.Capacity <= 0 {
			return float64(max(maxCap, 1))
		}
		return float64(nd.Capacity)
	}
	var sum float64
	for _, nd := range nodes {
		sum += weight(nd)
	}
	for _, nd := range nodes {
		held := per[nd.ID]
		if nd.Capacity > 0 && in.ExpertBytes > 0 && int64(held+1)*in.ExpertBytes > nd.Capacity {
			continue // full: it cannot take more
		}
		if 2*float64(held) < float64(total)*weight(nd)/sum {
			return true
		}
	}
	return false
}

// place runs router.Place on the current map and commits the result when
// it differs. Leader only. It returns the number of replica moves.
func (n *Node) place(rebalance bool) (int, error) { return n.placeWith(rebalance, 0) }

// placeWith is place with at most maxMoves rebalancing moves (0: Place's
// default). Place sees the map's reported load and the hot-replica rule
// (Config.Load); without rebalance it keeps hot replicas but adds or drops
// none. A move never leaves an expert without a Ready replica (handOff).
func (n *Node) placeWith(rebalance bool, maxMoves int) (int, error) {
	n.placeMu.Lock()
	defer n.placeMu.Unlock()
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	m := n.fsm.Map()
	if m.Model == nil || m.Model.Experts == 0 || m.Model.Layers == 0 {
		if len(m.Placement) == 0 {
			return 0, nil
		}
	}
	in := m.PlaceInput(placeLoad(m))
	in.Rebalance, in.MaxMoves = rebalance, maxMoves
	in.HotFactor, in.RebalanceRatio = n.cfg.Load.HotFactor, n.cfg.Load.RebalanceRatio
	res, err := router.Place(in)
	if err != nil {
		return 0, err
	}
	handOff(m, res.Placement)
	n.warnUnplaced(m, in, res)
	if reflect.DeepEqual(res.Placement, m.Placement) || (len(res.Placement) == 0 && len(m.Placement) == 0) {
		return 0, nil
	}
	err = n.applyLocalCmd(router.Command{Op: router.OpSetPlacement, Placement: router.PlacementEntries(res.Placement)})
	if err != nil {
		return 0, err
	}
	n.log.Info("placement committed", "moves", res.Moves, "experts", len(res.Placement), "rebalance", rebalance, "epoch", n.fsm.Map().Epoch)
	return res.Moves, nil
}

// warnUnplaced logs, when it changes, how far the placement falls short:
// experts with no replica at all (the model cannot be ready until nodes with
// room join) and experts with fewer replicas than the replication wants.
// Called with placeMu held.
func (n *Node) warnUnplaced(m *router.Map, in router.PlaceInput, res router.PlaceResult) {
	missing := 0
	for _, e := range res.Unplaced {
		if len(res.Placement[e]) == 0 {
			missing++
		}
	}
	short := len(res.Unplaced) - missing
	if [2]int{missing, short} == n.lastUnplaced {
		return
	}
	n.lastUnplaced = [2]int{missing, short}
	var capacity int64 // of active nodes; a node with capacity 0 is unlimited, so it is not short
	for _, nd := range in.Nodes {
		if nd.State == router.NodeActive {
			capacity += nd.Capacity
		}
	}
	args := []any{"experts", in.Layers * in.Experts, "expert_bytes", in.ExpertBytes, "replication", in.Replication,
		"active_nodes", len(m.ActiveNodes()), "active_capacity_bytes", capacity}
	switch {
	case missing > 0:
		n.log.Warn("cannot place every expert once: the model is not ready until nodes with room join (see --memory-limit, --capacity)",
			append(args, "unplaced", missing, "under_replicated", short, "needed_bytes", int64(in.Layers*in.Experts)*in.ExpertBytes)...)
	case short > 0:
		n.log.Warn("placement short of the wanted replication (every expert has a replica)", append(args, "under_replicated", short)...)
	default:
		n.log.Info("placement complete again", args...)
	}
}

// expireSessions removes expired sessions, if any. Leader only.
func (n *Node) expireSessions() {
	now := time.Now().UnixMilli()
	m := n.fsm.Map()
	for _, s := range m.Sessions.All() {
		if s.ExpiresMS <= now { // as expire_sessions has it: no expiry is expired
			if err := n.applyLocalCmd(router.Command{Op: router.OpExpireSessions, NowMS: now}); err != nil {
				n.log.Warn("expire sessions", "error", err)
			}
			return
		}
	}
}

// announceModel sets this node's model as the cluster's when the map has
// none, retrying until it is set (by anyone) or the node stops.
func (n *Node) announceModel() {
	defer n.wg.Done()
	for {
		if n.fsm.Map().Model != nil {
			return
		}
		if n.Leader() != "" {
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			// Only if still none: nodes started together with different
			// files must not replace each other's (the last one winning).
			err := n.Apply(ctx, router.Command{Op: router.OpSetModel, Model: n.model, IfNoModel: true})
			cancel()
			if err == nil {
				if live := n.fsm.Map().Model; live != nil && live.Digest == n.model.Digest {
					n.log.Info("set cluster model", "model", n.model.ID, "digest", n.model.Digest[:12])
				}
				return
			}
			n.log.Debug("set model", "error", err)
		}
		select {
		case <-n.stopCh:
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// rejoinWarnEvery spaces the warnings of a node that cannot rejoin gossip
// (it retries every few seconds).
const rejoinWarnEvery = 30 * time.Second

// rejoinFailed says why a background rejoin failed, at most every
// rejoinWarnEvery, and plainly when the peers use another cluster key: then
// retrying can never succeed, and the node would otherwise wait in silence.
func (n *Node) rejoinFailed(err error) {
	n.rejoinMu.Lock()
	if time.Since(n.rejoinWarned) < rejoinWarnEvery {
		n.rejoinMu.Unlock()
		return
	}
	n.rejoinWarned = time.Now()
	n.rejoinMu.Unlock()
	if strings.Contains(err.Error(), "decrypt") { // memberlist: "no installed keys could decrypt the message"
		n.log.Error("cannot rejoin gossip: the peers use another cluster key (check --cluster-key on this node)", "error", err)
		return
	}
	n.log.Warn("cannot rejoin gossip; retrying", "error", err)
}
