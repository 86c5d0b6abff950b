package cluster

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func validConfig() Config {
	c := DefaultConfig()
	c.ID, c.DataDir = "n0", "/tmp/x"
	c.HTTPAddr, c.GossipAddr, c.RaftAddr, c.ActorAddr = PortBase("127.0.0.1", 9000)
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mut  func(*Config)
	}{
		{"empty id", func(c *Config) { c.ID = "" }},
		{"id with space", func(c *Config) { c.ID = "a b" }},
		{"no data dir", func(c *Config) { c.DataDir = "" }},
		{"no port", func(c *Config) { c.RaftAddr = "127.0.0.1" }},
		{"port 0", func(c *Config) { c.RaftAddr = "127.0.0.1:0" }},
		{"unspecified host", func(c *Config) { c.GossipAddr = "0.0.0.0:9001" }},
		{"duplicate address", func(c *Config) { c.ActorAddr = c.HTTPAddr }},
		{"bad join", func(c *Config) { c.Join = []string{"nohost"} }},
		{"short key", func(c *Config) { c.ClusterKey = []byte("short") }},
		{"partial tls", func(c *Config) { c.TLS = &TLSFiles{CAFile: "ca"} }},
		{"zero voters", func(c *Config) { c.MaxVoters = 0 }},
		{"zero replication", func(c *Config) { c.Replication = 0 }},
		{"negative capacity", func(c *Config) { c.CapacityBytes = -1 }},
		{"negative memory limit", func(c *Config) { c.MemoryLimitBytes = -1 }},
		{"negative serving bytes", func(c *Config) { c.ServingBytes = -1 }},
		{"negative runtime reserve", func(c *Config) { c.RuntimeReserveBytes = -1 }},
		{"capacity and memory limit", func(c *Config) { c.CapacityBytes, c.MemoryLimitBytes = 1<<30, 2<<30 }},
		{"zero dead grace", func(c *Config) { c.DeadGrace = 0 }},
		{"lease above heartbeat", func(c *Config) { c.RaftLeaderLeaseTimeout = 2 * c.RaftHeartbeatTimeout }},
		{"probe timeout above interval", func(c *Config) { c.GossipProbeTimeout = 2 * time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mut(&c)
			if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Validate() = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	for _, in := range []string{
		"000102030405060708090a0b0c0d0e0f",
		"AAECAwQFBgcICQoLDA0ODw==",
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
	} {
		if k, err := ParseKey(in); err != nil || (len(k) != 16 && len(k) != 32) {
			t.Errorf("ParseKey(%q) = %d bytes, %v", in, len(k), err)
		}
	}
	for _, in := range []string{"", "abcd", "not a key at all!"} {
		if _, err := ParseKey(in); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseKey(%q) = %v, want ErrBadKey", in, err)
		}
	}
}

func TestNodeMetaFits(t *testing.T) {
	m := NodeMeta{ID: strings.Repeat("n", 63), HTTP: "255.255.255.255:65535", Raft: "255.255.255.255:65535", Actor: "255.255.255.255:65535", Capacity: 1 << 50, Version: "v1.2.3-dev+abcdef",
		Boot: 1<<63 - 1}
	for i := range 4 {
		m.Devices = append(m.Devices, metaDevice{Name: "cuda:" + string(rune('0'+i)), Mem: 1 << 40, Free: 1 << 40})
		m.Models = append(m.Models, strings.Repeat("f", 64))
	}
	b, err := m.Encode(metaMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > metaMaxSize {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := DecodeMeta(b)
	if err != nil || got.ID != m.ID || len(got.Devices) == 0 || got.Boot != m.Boot {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	t.Logf("worst-case meta %d bytes, kept %d devices and %d models", len(b), len(got.Devices), len(got.Models))
	if _, err := (NodeMeta{ID: strings.Repeat("x", 600)}).Encode(metaMaxSize); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("oversized meta: %v", err)
	}
}

func TestInitTLSReusesCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitTLS(dir, []string{"a"}, []string{"10.0.0.1", "node-a.example"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	w, err := InitTLS(dir, []string{"b"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 2 { // only b.crt and b.key: the CA is reused
		t.Errorf("wrote %v", w)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := loadTLS(TLSLayout(dir, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if _, err := InitTLS(dir, []string{"bad name"}, nil, time.Hour); !errors.Is(err, ErrTLS) {
		t.Errorf("bad node name: %v", err)
	}
}

// A node bound by host name advertises that name to Raft: a bootstrapping
// node writes it into the configuration, and peers dial and verify it. The
// resolved IP is not in a key-derived certificate, so a later leader could
// not reach the node that bootstrapped the cluster.
func TestTLSStreamLayerAdvertisesConfiguredHost(t *testing.T) {
	tc, err := keyTLS([]byte("0123456789abcdef"), "n0", "localhost:0")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := newTLSStreamLayer("localhost:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	_, port, _ := net.SplitHostPort(sl.Listener.Addr().String())
	if got, want := sl.Addr().String(), net.JoinHostPort("localhost", port); got != want {
		t.Fatalf("advertised %s, want %s", got, want)
	}
	// Raft dials that address: the handshake verifies the name.
	done := make(chan error, 1)
	go func() {
		c, err := sl.Accept()
		if err == nil {
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		done <- err
	}()
	c, err := sl.Dial(raft.ServerAddress(sl.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatalf("dialling the advertised address: %v", err)
	}
	c.Write([]byte{1})
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server side: %v", err)
	}
}
