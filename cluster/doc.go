// Package cluster wires one Conclave node: the protoactor actor system with
// remote, memberlist membership with node metadata, the hashicorp/raft peer
// whose FSM is the router's cluster map, and the admin HTTP API.
//
// A Node owns its lifecycle (Start, Leave, Kill). While a node is the Raft
// leader it also runs the cluster's autopilot: it turns memberlist events into
// map updates, keeps the Raft configuration in step with the live members
// (new members join as non-voters and are promoted, up to Config.MaxVoters
// voters, once they gossip that Raft has reached them; dead nodes are
// removed after Config.DeadGrace), re-runs placement when membership or node state change and
// expires sessions. Writes from any node reach the leader through Node.Apply,
// which forwards over the admin HTTP API when this node is a follower.
//
// Model distribution: a model file is identified by the digest of its chunk
// Manifest, so only one node needs the file. Nodes holding it serve the
// manifest and chunks on the admin API; Node.FetchModel gives a node without
// it a partial copy (ModelCopy: a sparse file whose chunks are verified as
// they arrive and recorded in a ChunkStore) holding the dense tensors, and
// StartExpertsFrom fetches the experts placement gives the node before it
// runs them.
//
// Memory: a node gossips the bytes of experts it may host (its capacity),
// set directly or derived from Config.MemoryLimitBytes (MemoryBudget), and
// placement respects it; a node hosting experts keeps resident only the
// model's dense weights and its own experts (Experts, through
// model.Weights.KeepResident).
//
// Security: with Config.ClusterKey set, gossip is encrypted and authenticated
// with memberlist's keyring, so a node without the key cannot join, and the
// Raft transport and the actor remote (gRPC) use mutual TLS from a CA every
// node derives from the key (keyTLS); with Config.TLS set they use mutual TLS
// from the cluster CA in those files instead (see InitTLS). The admin HTTP API is plain HTTP for now and
// must be exposed only on a trusted network.
//
// The package may import router, model and model/gguf, and the networking
// libraries (raft, memberlist, protoactor-go); it never imports api or cmd.
// The whole-cluster test fixture is in cluster/clustertest.
package cluster
