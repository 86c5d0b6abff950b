package router

// NodeState is a node's lifecycle state in the cluster map.
type NodeState string

const (
	NodeJoining  NodeState = "joining"  // known, not yet hosting
	NodeActive   NodeState = "active"   // hosts experts and sessions
	NodeDraining NodeState = "draining" // placement moves everything away; it takes nothing new
	NodeDead     NodeState = "dead"     // memberlist declared it dead; removed after a grace period
)

// Device is a compute device on a node.
type Device struct {
	Name      string `json:"name"`       // "cpu", "cuda:0", …
	MemBytes  int64  `json:"mem_bytes"`  // total memory
	FreeBytes int64  `json:"free_bytes"` // free memory when last reported
}

// Node is a cluster member as the map records it.
type Node struct {
	ID         string    `json:"id"`
	HTTPAddr   string    `json:"http_addr"`
	GossipAddr string    `json:"gossip_addr"`
	RaftAddr   string    `json:"raft_addr"`
	ActorAddr  string    `json:"actor_addr"`
	Devices    []Device  `json:"devices"`
	Capacity   int64     `json:"capacity_bytes"` // bytes of expert weights the node may host
	State      NodeState `json:"state"`
	Version    string    `json:"version"`          // build version
	Models     []string  `json:"models,omitempty"` // digests of model files it can load
	Voter      bool      `json:"voter"`            // Raft voter (else non-voter)
	UpdatedMS  int64     `json:"updated_ms"`       // unix ms of the last state change
	// Boot names the node's process (its start, unix ns; 0 when unknown).
	// An upsert with another Boot is a restart: the node's replicas are
	// loaded by nothing yet, so they are no longer ready (or staged) until
	// its host reports them again.
	Boot int64 `json:"boot,omitempty"`
	// Serving is the digest of the model the node runs ("" while it runs
	// none, fetching the live one say). A node running another model than
	// the live one is given none of its experts (PlaceInput): its weights
	// cannot compute them.
	Serving string `json:"serving,omitempty"`
}

// ExpertID names one expert of one layer.
type ExpertID struct {
	Layer int `json:"layer"`
	Index int `json:"index"`
}

// Replica is one copy of an expert on a node's device.
type Replica struct {
	Node   string `json:"node"`
	Device string `json:"device"`
	Ready  bool   `json:"ready"` // weights loaded and serving
	// Staged: the expert's staged version (ExpertVersion.Staged) is loaded
	// here too, ready to serve once flipped.
	Staged bool `json:"staged,omitempty"`
}

// Model is the model the cluster serves.
type Model struct {
	ID          string `json:"id"`
	Digest      string `json:"digest"` // hex sha256 of the GGUF file's chunk manifest (cluster.Manifest): verifies every chunk
	Version     int    `json:"version"`
	Arch        string `json:"arch"`
	Layers      int    `json:"layers"`
	Experts     int    `json:"experts"` // per layer; 0 for dense models
	TopK        int    `json:"top_k"`
	ExpertBytes int64  `json:"expert_bytes"` // bytes of one expert's weights
	Admitted    bool   `json:"admitted"`     // passed the admission suite
	Live        bool   `json:"live"`         // serving traffic
}

// Session records a session's home node (affinity keeps its KV cache local).
type Session struct {
	ID        string `json:"id"`
	Home      string `json:"home"`
	LastUseMS int64  `json:"last_use_ms"`
	ExpiresMS int64  `json:"expires_ms"`
	// Owner names the client the session was created for (a key digest or
	// an address, never a key; "" when unknown). At MaxSessions a new
	// session evicts one of the owner holding the most, so a client that
	// invents session ids churns its own.
	Owner string `json:"owner,omitempty"`
}

// ExpertLoad is an observed rate of rows routed to one expert.
type ExpertLoad struct {
	Expert     ExpertID `json:"expert"`
	RowsPerSec float64  `json:"rows_per_sec"` // >= 0, finite; decayed (EWMA) rate
}

// NodeLoad is the latest load report of one node: the experts its gate
// routed rows to, by (layer, index), zero rates left out.
type NodeLoad struct {
	Experts []ExpertLoad `json:"experts"`
	AtMS    int64        `json:"at_ms"` // unix ms the report was made (Command.NowMS)
}
