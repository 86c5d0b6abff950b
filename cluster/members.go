package cluster

import (
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// GossipState is a member's state as this node's memberlist last reported it.
type GossipState string

const (
	GossipAlive   GossipState = "alive"
	GossipDead    GossipState = "dead"    // failed probes and suspicion timed out
	GossipLeft    GossipState = "left"    // announced its own leave
	GossipUnknown GossipState = "unknown" // never seen by this node
)

// member is one entry of the local membership table.
type member struct {
	Name  string
	Addr  net.IP
	Port  uint16
	Meta  NodeMeta
	State GossipState
	Since time.Time // when State was entered, local clock
}

// members is the membership table fed by memberlist events. memberlist
// calls the delegate methods from its own goroutines; they only update the
// table and poke the node's loop, never block.
type members struct {
	log  hclog.Logger
	kick func()

	mu  sync.Mutex
	tab map[string]member
	ver uint64 // bumped on every change
}

func newMembers(log hclog.Logger, kick func()) *members {
	return &members{log: log, kick: kick, tab: map[string]member{}}
}

func (ms *members) set(n *memberlist.Node, st GossipState) {
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		ms.log.Warn("ignoring member with bad metadata", "member", n.Name, "error", err)
		return
	}
	if meta.ID != n.Name {
		ms.log.Warn("ignoring member whose metadata names another node", "member", n.Name, "meta_id", meta.ID)
		return
	}
	ms.mu.Lock()
	old, ok := ms.tab[n.Name]
	since := time.Now()
	if ok && old.State == st {
		since = old.Since
	}
	ms.tab[n.Name] = member{Name: n.Name, Addr: slices.Clone(n.Addr), Port: n.Port, Meta: meta, State: st, Since: since}
	ms.ver++
	ms.mu.Unlock()
	ms.kick()
}

// NotifyJoin implements memberlist.EventDelegate.
func (ms *members) NotifyJoin(n *memberlist.Node) {
	ms.log.Debug("member joined", "member", n.Name, "addr", n.Address())
	ms.set(n, GossipAlive)
}

// NotifyLeave implements memberlist.EventDelegate. A member whose last
// metadata said it was leaving (NodeMeta.Leaving) left; any other is dead.
// (memberlist's own leave state never reaches the event: the Node it
// passes keeps StateAlive.)
func (ms *members) NotifyLeave(n *memberlist.Node) {
	st := GossipDead
	if meta, err := DecodeMeta(n.Meta); n.State == memberlist.StateLeft || err == nil && meta.Leaving {
		st = GossipLeft
	}
	ms.log.Info("member gone", "member", n.Name, "state", st)
	ms.set(n, st)
}

// NotifyUpdate implements memberlist.EventDelegate (metadata changed).
func (ms *members) NotifyUpdate(n *memberlist.Node) { ms.set(n, GossipAlive) }

// forget drops the members that are dead or left and for which keep is
// false (the map no longer holds them): the table, its metrics and the
// peers file otherwise keep every node that ever passed through.
func (ms *members) forget(keep func(id string) bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for id, m := range ms.tab {
		if m.State != GossipAlive && !keep(id) {
			delete(ms.tab, id)
			ms.ver++
		}
	}
}

// snapshot returns a copy of the table and its version.
func (ms *members) snapshot() (map[string]member, uint64) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	out := make(map[string]member, len(ms.tab))
	for k, v := range ms.tab {
		out[k] = v
	}
	return out, ms.ver
}

func (ms *members) get(id string) (member, bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m, ok := ms.tab[id]
	return m, ok
}

// metaDelegate serves this node's metadata to memberlist.
type metaDelegate struct {
	mu   sync.Mutex
	meta NodeMeta
	enc  []byte // meta encoded within metaMaxSize
}

func newMetaDelegate(m NodeMeta) (*metaDelegate, error) {
	d := &metaDelegate{}
	return d, d.set(m)
}

// set replaces the metadata; memberlist gossips it after Memberlist.UpdateNode.
func (d *metaDelegate) set(m NodeMeta) error {
	enc, err := m.Encode(metaMaxSize)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.meta, d.enc = m, enc
	return nil
}

// get returns the current metadata.
func (d *metaDelegate) get() NodeMeta {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}

func (d *metaDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.enc) > limit {
		return nil // set checked the size against memberlist's limit; never reached
	}
	return d.enc
}
func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}
