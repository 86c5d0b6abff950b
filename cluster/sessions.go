package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/conclave-ai/conclave/router"
)

// ErrNoHome means a session's home could not be settled: the map names no
// usable node for it (or gives no HTTP address for the one it names).
var ErrNoHome = errors.New("cluster: no home for the session")

// SessionConfig configures a SessionRouter.
type SessionConfig struct {
	// TTL is how long a session keeps its home after its last use; the
	// leader then expires it and its next request gets a fresh home.
	TTL time.Duration
	// TouchInterval is the least time between two touches (Raft writes
	// that push back the expiry) of one session from one node: a session's
	// requests cost at most one cluster write per interval, not one each.
	// Must be below TTL.
	TouchInterval time.Duration
	// Wait bounds how long Route and Rehome wait for an assignment they
	// committed to reach this node's map.
	Wait time.Duration
}

// DefaultSessionConfig keeps idle sessions 30 minutes and touches each at
// most every 30 seconds.
func DefaultSessionConfig() SessionConfig {
	return SessionConfig{TTL: 30 * time.Minute, TouchInterval: 30 * time.Second, Wait: 5 * time.Second}
}

// Validate reports the first field out of range.
func (c SessionConfig) Validate() error {
	switch {
	case c.TTL <= 0:
		return fmt.Errorf("%w: session TTL %v must be positive", ErrInvalidConfig, c.TTL)
	case c.TouchInterval <= 0 || c.TouchInterval >= c.TTL:
		return fmt.Errorf("%w: session TouchInterval %v must be in (0, TTL)", ErrInvalidConfig, c.TouchInterval)
	case c.Wait <= 0:
		return fmt.Errorf("%w: session Wait %v must be positive", ErrInvalidConfig, c.Wait)
	}
	return nil
}

// SessionRouter answers, from the Raft map, which node serves a session
// (it implements api.SessionRouter): the session's recorded home, assigned
// on first use by the FSM (the least-loaded active node). Reads come from
// this node's copy of the map; writes (assign, touch, re-home) go through
// Node.Apply. Safe for concurrent use.
type SessionRouter struct {
	n   *Node
	cfg SessionConfig

	mu      sync.Mutex
	touched map[string]time.Time // session → when this node last touched it
}

// NewSessionRouter returns n's session router.
func NewSessionRouter(n *Node, cfg SessionConfig) (*SessionRouter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &SessionRouter{n: n, cfg: cfg, touched: map[string]time.Time{}}, nil
}

// Route returns local when the session's home is this node, else the home's
// base URL. A session not in the map (or expired, or homed on a node that
// is no longer active) is assigned first; a known one is touched, at most
// once per TouchInterval, without waiting for the write.
func (r *SessionRouter) Route(ctx context.Context, id, client string) (bool, string, error) {
	now := time.Now()
	m := r.n.Map()
	home, avoid := "", ""
	if s, ok := m.Sessions.Get(id); ok && live(m, s, now) {
		if runsLive(m, s.Home) {
			r.touch(id, now)
			return r.target(m, s.Home)
		}
		avoid = s.Home // it runs another model than the live one: it would refuse
	}
	// The FSM assigns a home itself unless told one, among every active
	// node as replicas of older builds do; while some of them run another
	// model than the live one, choose here among those that run it.
	if avoid != "" || slices.ContainsFunc(m.ActiveNodes(), func(n router.Node) bool { return !runsLive(m, n.ID) }) {
		var ok bool
		if home, ok = router.ChooseHomeAt(m, id, now.UnixMilli()); !ok && avoid != "" {
			// No node runs the live model yet (a model load has just
			// begun): keep the home rather than write a move per request.
			r.touch(id, now)
			return r.target(m, avoid)
		}
	}
	return r.assign(ctx, id, client, home, avoid, now)
}

// runsLive reports whether node runs the map's live model (or none yet).
func runsLive(m *router.Map, node string) bool {
	n, ok := m.Nodes[node]
	return m.Model == nil || !ok || n.Serving == "" || n.Serving == m.Model.Digest
}

// Rehome gives the session a home other than the node serving failed (a
// URL Route returned) and returns its route. When another node already
// re-homed it elsewhere, that home is kept.
func (r *SessionRouter) Rehome(ctx context.Context, id, client, failed string) (bool, string, error) {
	now := time.Now()
	m := r.n.Map()
	bad := ""
	for nid, nd := range m.Nodes {
		if "http://"+nd.HTTPAddr == failed {
			bad = nid
		}
	}
	if s, ok := m.Sessions.Get(id); ok && live(m, s, now) && s.Home != bad {
		return r.target(m, s.Home)
	}
	// The failed node may still be active in the map (not yet declared
	// dead): choose among the others, the way the FSM would.
	others := &router.Map{Nodes: maps.Clone(m.Nodes), Sessions: m.Sessions, Model: m.Model} // Model: homes run the live one
	delete(others.Nodes, bad)
	home, ok := router.ChooseHomeAt(others, id, now.UnixMilli())
	if !ok {
		return true, "", nil // nobody else: serve it here
	}
	return r.assign(ctx, id, client, home, bad, now)
}

// assign records the session with home ("" lets the FSM choose) as
// client's (a known session keeps its owner), waits for
// this node's map to show it live on a node other than avoid (a concurrent
// re-home elsewhere counts), and returns its route.
func (r *SessionRouter) assign(ctx context.Context, id, client, home, avoid string, now time.Time) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Wait)
	defer cancel()
	err := r.n.Apply(ctx, router.Command{Op: router.OpAssignSession, NowMS: now.UnixMilli(),
		Session: &router.Session{ID: id, Home: home, ExpiresMS: now.Add(r.cfg.TTL).UnixMilli(), Owner: client}})
	if err != nil {
		return false, "", err
	}
	r.mu.Lock()
	r.touched[id] = now
	r.mu.Unlock()
	for {
		changed := r.n.FSM().Changed()
		m := r.n.Map()
		if s, ok := m.Sessions.Get(id); ok && live(m, s, now) && s.Home != avoid {
			return r.target(m, s.Home)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false, "", fmt.Errorf("cluster: waiting for session %q to be assigned: %w", id, ctx.Err())
		case <-r.n.Done():
			return false, "", ErrStopped
		}
	}
}

// touch pushes the session's expiry back, at most once per TouchInterval,
// in the background (a lost touch only shortens the session's life).
func (r *SessionRouter) touch(id string, now time.Time) {
	r.mu.Lock()
	if now.Sub(r.touched[id]) < r.cfg.TouchInterval {
		r.mu.Unlock()
		return
	}
	r.touched[id] = now
	if len(r.touched) > 4096 { // forget sessions that no longer need throttling
		for k, t := range r.touched {
			if now.Sub(t) >= r.cfg.TouchInterval {
				delete(r.touched, k)
			}
		}
	}
	r.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Wait)
		defer cancel()
		err := r.n.Apply(ctx, router.Command{Op: router.OpTouchSession, SessionID: id, NowMS: now.UnixMilli()})
		if err != nil && !errors.Is(err, router.ErrUnknownSession) && !errors.Is(err, ErrStopped) {
			r.n.log.Debug("touching a session", "session", id, "error", err)
		}
	}()
}

// target is the route to home: local when it is this node.
func (r *SessionRouter) target(m *router.Map, home string) (bool, string, error) {
	if home == r.n.ID() {
		return true, "", nil
	}
	nd, ok := m.Nodes[home]
	if !ok || nd.HTTPAddr == "" {
		return false, "", fmt.Errorf("%w: node %q of the map has no HTTP address", ErrNoHome, home)
	}
	return false, "http://" + nd.HTTPAddr, nil
}

// live reports whether s is unexpired and homed on an active node.
func live(m *router.Map, s router.Session, now time.Time) bool {
	nd, ok := m.Nodes[s.Home]
	return ok && nd.State == router.NodeActive && s.ExpiresMS > now.UnixMilli()
}
