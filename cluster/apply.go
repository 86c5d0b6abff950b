package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/raft"
)

// Apply commits c to the cluster map from any node: on the leader through
// Raft, on a follower by forwarding it to the leader's admin API. It retries
// while there is no leader or leadership moves, until ctx ends. A command
// the FSM refuses returns an error wrapping ErrRejected and the router's
// sentinel (test with errors.Is). When Apply returns nil the command is
// committed, but this node's FSM may apply it a moment later; wait on
// FSM().Changed() to observe it locally.
func (n *Node) Apply(ctx context.Context, c router.Command) error {
	if c.V == 0 {
		c.V = c.MinVersion()
	}
	if c.NowMS == 0 {
		c.NowMS = time.Now().UnixMilli()
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	b, err := c.Encode()
	if err != nil {
		return err
	}
	backoff := 10 * time.Millisecond
	for {
		err := n.applyOnce(ctx, b)
		if err == nil || errors.Is(err, ErrRejected) || errors.Is(err, ErrStopped) || errors.Is(err, ErrUnauthorized) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: apply %s: %w (last error: %v)", c.Op, ctx.Err(), err)
		case <-n.stopCh:
			return ErrStopped
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// applyOnce makes one attempt: locally when leader, else one forward.
func (n *Node) applyOnce(ctx context.Context, b []byte) error {
	select {
	case <-n.stopCh:
		return ErrStopped
	default:
	}
	if n.raft.State() == raft.Leader {
		return n.applyLocal(ctx, b)
	}
	addr := n.leaderHTTP()
	if addr == "" {
		return ErrNoLeader
	}
	cctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	return (&AdminClient{Base: "http://" + addr, HTTP: n.client}).applyForwarded(cctx, b)
}

// applyLocal commits an encoded command through this node's Raft; it fails
// with ErrNotLeader on a follower.
func (n *Node) applyLocal(ctx context.Context, b []byte) error {
	f := n.raft.Apply(b, n.cfg.ApplyTimeout)
	if err := waitFuture(ctx, f); err != nil {
		return translateRaftErr(err)
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	return nil
}

// applyLocalCmd is applyLocal for the leader's own commands.
func (n *Node) applyLocalCmd(c router.Command) error {
	if c.V == 0 {
		c.V = c.MinVersion()
	}
	b, err := c.Encode()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(n.ctx, 2*n.cfg.ApplyTimeout)
	defer cancel()
	return n.applyLocal(ctx, b)
}

// translateRaftErr maps raft's leadership errors to ErrNotLeader.
func translateRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrNotVoter):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return err
}

// leaderHTTP returns the leader's admin HTTP address, "" when unknown. The
// map has it once the leader upserted itself; memberlist metadata has it
// from the moment the leader joined gossip.
func (n *Node) leaderHTTP() string {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return ""
	}
	if string(id) == n.cfg.ID {
		return n.cfg.HTTPAddr
	}
	if m, ok := n.members.get(string(id)); ok && m.State == GossipAlive && m.Meta.HTTP != "" {
		return m.Meta.HTTP
	}
	if nd, ok := n.fsm.Map().Nodes[string(id)]; ok {
		return nd.HTTPAddr
	}
	return ""
}
