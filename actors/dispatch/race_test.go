//go:build race

package dispatch_test

// protoactor-go's remote.Start writes grpc's global logger while other
// in-process remotes read it (an upstream race), so multi-node tests with
// remotes are skipped under the race detector.
const raceEnabled = true
