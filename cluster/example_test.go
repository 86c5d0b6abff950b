package cluster_test

import (
	"fmt"

	"github.com/conclave-ai/conclave/cluster"
)

// A node's four listeners from the --bind/--port-base shorthand.
func ExamplePortBase() {
	h, g, r, a := cluster.PortBase("127.0.0.1", 8080)
	fmt.Println(h, g, r, a)
	// Output: 127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083
}

// Configuring a node: defaults, identity, addresses, then Validate. Start(cfg)
// would bring it up.
func ExampleDefaultConfig() {
	cfg := cluster.DefaultConfig()
	cfg.ID, cfg.DataDir = "n1", "var/n1"
	cfg.HTTPAddr, cfg.GossipAddr, cfg.RaftAddr, cfg.ActorAddr = cluster.PortBase("127.0.0.1", 9000)
	cfg.Join = []string{"127.0.0.1:8081"}
	fmt.Println(cfg.Validate(), cfg.MaxVoters, cfg.DeadGrace)
	// Output: <nil> 5 10s
}
