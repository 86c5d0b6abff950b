package cluster

import (
	"errors"

	"github.com/conclave-ai/conclave/router"
)

var (
	// ErrInvalidConfig is wrapped by Config.Validate errors.
	ErrInvalidConfig = errors.New("cluster: invalid config")
	// ErrNoLeader means no Raft leader is known right now; retry later.
	ErrNoLeader = errors.New("cluster: no leader")
	// ErrNotLeader means a leader-only operation reached a follower.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrRejected wraps an error the FSM returned for a command: the command
	// was committed but invalid, so retrying it will not help.
	ErrRejected = errors.New("cluster: command rejected")
	// ErrJoin means none of the join addresses could be reached (or the
	// cluster key did not match theirs).
	ErrJoin = errors.New("cluster: join failed")
	// ErrStopped is returned by operations on a node that has shut down.
	ErrStopped = errors.New("cluster: node stopped")
	// ErrDataDirInUse: another process has this node's data dir open.
	ErrDataDirInUse = errors.New("cluster: data dir in use")
	// ErrUnknownNode means a node id is not in the cluster map; it is the
	// router's sentinel, so the FSM's refusals match it too.
	ErrUnknownNode = router.ErrUnknownNode
	// ErrMetaTooLarge means the node metadata does not fit memberlist's
	// 512-byte limit even after dropping optional fields.
	ErrMetaTooLarge = errors.New("cluster: node metadata too large")
	// ErrBadKey means a cluster key has the wrong length or encoding.
	ErrBadKey = errors.New("cluster: bad cluster key")
	// ErrMemoryLimit means a node's memory limit leaves no room for experts
	// once its dense weights, serving memory and runtime reserve are counted.
	ErrMemoryLimit = errors.New("cluster: memory limit leaves no room for experts")
)
