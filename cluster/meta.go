package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"

	"github.com/conclave-ai/conclave/router"
)

// metaMaxSize is memberlist's limit on node metadata (memberlist.MetaMaxSize).
const metaMaxSize = 512

// NodeMeta is what a node gossips about itself. Keys are short because
// memberlist caps metadata at 512 bytes; the gossip address is the memberlist
// address itself and is not repeated.
type NodeMeta struct {
	ID       string       `json:"i"`
	HTTP     string       `json:"h"`
	Raft     string       `json:"r"`
	Actor    string       `json:"a"`
	Devices  []metaDevice `json:"d,omitempty"`
	Capacity int64        `json:"c,omitempty"` // bytes
	Version  string       `json:"v,omitempty"`
	Models   []string     `json:"m,omitempty"` // digests (cluster.Manifest) of complete model files held
	Boot     int64        `json:"b,omitempty"` // when this process started (unix ns): a new one is a restart
	// RaftReached says a Raft leader has reached this process and it has
	// applied what the leader had committed (or it leads): the leader's
	// Raft connections to it work. Only then is a non-voter
	// promoted, so a member gossip admits but Raft cannot reach (a
	// certificate from another CA, a wrong Raft address) never counts
	// toward a quorum.
	RaftReached bool `json:"rr,omitempty"`
	// Leaving says the node is leaving gracefully (Node.Leave): its gossip
	// leave that follows is a departure, not a failure. memberlist cannot
	// tell the two apart for us (its Node.State stays alive in events).
	Leaving bool `json:"lv,omitempty"`
	// Serving is the digest of the model this node's experts and engine
	// run ("" before it runs one): placement gives it experts of that
	// model only.
	Serving string `json:"sv,omitempty"`
}

type metaDevice struct {
	Name string `json:"n"`
	Mem  int64  `json:"t"` // total bytes
	Free int64  `json:"f"` // free bytes
}

// Encode marshals m within limit bytes, dropping model digests from the end
// and then devices from the end when it does not fit.
func (m NodeMeta) Encode(limit int) ([]byte, error) {
	for {
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		if len(b) <= limit {
			return b, nil
		}
		switch {
		case len(m.Models) > 0:
			m.Models = m.Models[:len(m.Models)-1]
		case len(m.Devices) > 1:
			m.Devices = m.Devices[:len(m.Devices)-1]
		default:
			return nil, fmt.Errorf("%w: %d bytes > %d", ErrMetaTooLarge, len(b), limit)
		}
	}
}

// DecodeMeta parses gossiped metadata.
func DecodeMeta(b []byte) (NodeMeta, error) {
	var m NodeMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("cluster: node metadata: %w", err)
	}
	if m.ID == "" {
		return m, fmt.Errorf("cluster: node metadata without id")
	}
	return m, nil
}

// node turns metadata (and the member's gossip address) into a map node in
// state st.
func (m NodeMeta) node(gossipIP net.IP, gossipPort uint16, st router.NodeState) router.Node {
	n := router.Node{
		ID:         m.ID,
		HTTPAddr:   m.HTTP,
		GossipAddr: net.JoinHostPort(gossipIP.String(), strconv.Itoa(int(gossipPort))),
		RaftAddr:   m.Raft,
		ActorAddr:  m.Actor,
		Capacity:   m.Capacity,
		State:      st,
		Version:    m.Version,
		Models:     m.Models,
		Boot:       m.Boot,
		Serving:    m.Serving,
	}
	for _, d := range m.Devices {
		n.Devices = append(n.Devices, router.Device{Name: d.Name, MemBytes: d.Mem, FreeBytes: d.Free})
	}
	return n
}
