// Package router owns the cluster map and the pure decisions made from it.
//
// It owns:
//   - Map, the replicated cluster map: the live model and known versions,
//     nodes and their states, expert placement with replica readiness,
//     session homes, the replication target, and the epoch that every
//     change bumps (dispatches carry it so stale routes are detectable);
//   - Command, the versioned JSON encoding of every change, and Map.Apply,
//     the pure, deterministic transition function (time comes in the
//     command, never from the clock);
//   - FSM, the raft.FSM that applies commands copy-on-write, serves
//     lock-free reads of the current map (FSM.Map), wakes waiters
//     (FSM.Changed), and snapshots and restores the map as JSON;
//   - the pure decisions read from a map: Place (expert placement that
//     keeps what it can and balances memory and observed load), ChooseHome
//     (session affinity), Map.PickReplica (which replica to call).
//
// It imports github.com/hashicorp/raft (for the FSM interfaces) and the
// standard library only: no memberlist, no actors, no network. Package
// cluster wires the FSM into a raft.Raft, proposes commands on the leader
// and runs Place when membership or load changes; everyone else reads the
// map locally.
package router
