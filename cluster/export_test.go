package cluster

import (
	"crypto/tls"
	"time"
)

// SetServingForTest gossips d as the digest of the model n runs, as
// StartExperts does, for tests without expert hosts.
func (n *Node) SetServingForTest(d string) { n.updateMeta(func(m *NodeMeta) { m.Serving = d }) }

// KeyTLSClientForTest is the client side of the mutual TLS a node with
// cluster key key uses for Raft and the actors.
func KeyTLSClientForTest(key []byte) (*tls.Config, error) {
	tc, err := keyTLS(key, "probe")
	if err != nil {
		return nil, err
	}
	return tc.Client, nil
}

// SetStuckNonVoterForTest sets how long a node may stay a non-voter before
// Status calls it a problem, until the returned func restores it.
func SetStuckNonVoterForTest(d time.Duration) func() {
	old := stuckNonVoter.Swap(int64(d))
	return func() { stuckNonVoter.Store(old) }
}
