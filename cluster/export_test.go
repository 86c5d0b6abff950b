package cluster

// SetServingForTest gossips d as the digest of the model n runs, as
// StartExperts does, for tests without expert hosts.
func (n *Node) SetServingForTest(d string) { n.updateMeta(func(m *NodeMeta) { m.Serving = d }) }
