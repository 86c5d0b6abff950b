//go:build race

package clustertest

// raceEnabled is true under the race detector; see cluster.Config.NoActorRemote.
const raceEnabled = true
