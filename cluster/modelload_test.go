package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

func TestReadyExperts(t *testing.T) {
	m := router.NewMap()
	if r, n := cluster.ReadyExperts(m); r != 0 || n != 0 {
		t.Fatalf("no model: %d/%d", r, n)
	}
	m.Model = &router.Model{ID: "x", Layers: 2, Experts: 2}
	m.Placement = map[router.ExpertID][]router.Replica{
		{Layer: 0, Index: 0}: {{Node: "a"}, {Node: "b", Ready: true}},
		{Layer: 0, Index: 1}: {{Node: "a", Ready: true}, {Node: "b", Ready: true}},
		{Layer: 1, Index: 0}: {{Node: "a"}},
		{Layer: 5, Index: 0}: {{Node: "a", Ready: true}}, // not an expert of the model
	}
	m.Nodes = map[string]router.Node{"a": {ID: "a", State: router.NodeActive}, "b": {ID: "b", State: router.NodeDraining}}
	if r, n := cluster.ReadyExperts(m); r != 2 || n != 4 {
		t.Fatalf("got %d/%d, want 2/4", r, n)
	}
	// A ready replica on a dead node cannot be called: expert (0, 0) has
	// no other.
	m.Nodes["b"] = router.Node{ID: "b", State: router.NodeDead}
	if r, n := cluster.ReadyExperts(m); r != 1 || n != 4 {
		t.Fatalf("b dead: got %d/%d, want 1/4", r, n)
	}
	m.Nodes = map[string]router.Node{
		"a": {ID: "a", State: router.NodeActive, Models: []string{"d1"}},
		"b": {ID: "b", State: router.NodeDead, Models: []string{"d1"}},
		"c": {ID: "c", State: router.NodeJoining, Models: []string{"d2", "d1"}},
	}
	if h := cluster.ModelHosts(m, "d1"); strings.Join(h, ",") != "a,c" {
		t.Fatalf("hosts of d1: %v", h)
	}
	if h := cluster.ModelHosts(m, "d3"); len(h) != 0 {
		t.Fatalf("hosts of d3: %v", h)
	}
}

// TestLoadModelAdmin: POST /admin/v1/model rejects malformed bodies (400,
// JSON error) and models no node has the file of (409 no_host), and makes a
// hosted model the live one; the node's Experts.Ready follows its experts.
func TestLoadModelAdmin(t *testing.T) {
	scfg, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	path := testmodel.Write(t, scfg)
	var logs lockedBuffer
	c := clustertest.New(t, 1, clustertest.Options{Logs: &logs, Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.ModelPath = path
		cfg.Replication = 1
		return cfg
	}})
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	w, err := model.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(1)
	t.Cleanup(pool.Close)
	x, err := c.Node(0).StartExperts(w, pool, dispatch.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Close)
	clustertest.WaitFor(t, 10*time.Second, x.Ready, "experts ready")

	base := "http://" + c.Config(0).HTTPAddr
	post := func(body string) (int, string, string) {
		t.Helper()
		resp, err := http.Post(base+"/admin/v1/model", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var eb struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		json.Unmarshal(b, &eb)
		return resp.StatusCode, eb.Error.Type, string(b)
	}
	before := c.Node(0).Map().Model
	digest := strings.Repeat("ab", 32)
	for _, body := range []string{
		"not json",
		`{"id":"x","digest":"` + digest + `","layers":2,"experts":4,"top_k":2,"unknown":`,
		`{"digest":"` + digest + `","layers":2,"experts":4,"top_k":2}`,
		`{"id":"x","digest":"short","layers":2,"experts":4,"top_k":2}`,
		`{"id":"x","digest":"` + strings.Repeat("zz", 32) + `","layers":2,"experts":4,"top_k":2}`,
		`{"id":"x","digest":"` + digest + `","layers":0,"experts":4,"top_k":2}`,
		`{"id":"x","digest":"` + digest + `","layers":2,"experts":2,"top_k":3}`,
	} {
		if status, typ, raw := post(body); status != http.StatusBadRequest || typ != "invalid_request" {
			t.Errorf("POST %s: %d %q %s", body, status, typ, raw)
		}
	}
	if status, typ, raw := post(`{"id":"x","digest":"` + digest + `","layers":2,"experts":4,"top_k":2}`); status != http.StatusConflict || typ != "no_host" {
		t.Errorf("unhosted digest: %d %q %s", status, typ, raw)
	}
	ac := &cluster.AdminClient{Base: base}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ac.LoadModel(ctx, router.Model{ID: "x", Digest: digest, Layers: 2, Experts: 4, TopK: 2}); !errors.Is(err, cluster.ErrNoHost) || !errors.Is(err, cluster.ErrRejected) {
		t.Errorf("LoadModel of an unhosted digest: %v", err)
	}
	if m := c.Node(0).Map(); m.Model == nil || before == nil || *m.Model != *before {
		t.Fatalf("rejected loads changed the model: %+v", m.Model)
	}

	mod, err := cluster.InspectModel(path)
	if err != nil {
		t.Fatal(err)
	}
	mod.ID, mod.Version, mod.Live = "tiny-renamed", 2, false
	r, err := ac.LoadModel(ctx, mod)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Model.Live || len(r.Hosts) != 1 || r.Hosts[0] != "n0" {
		t.Errorf("reply: %+v", r)
	}
	m := c.Node(0).Map()
	if m.Model == nil || m.Model.ID != "tiny-renamed" || m.Model.Version != 2 || !m.Model.Live || m.Model.Digest != mod.Digest {
		t.Fatalf("live model after load: %+v", m.Model)
	}
	if len(m.Versions) != 2 || m.Versions[0].Live {
		t.Errorf("versions: %+v", m.Versions)
	}
	clustertest.WaitFor(t, 10*time.Second, x.Ready, "experts ready after the reload")
	if err := x.Serving(); err != nil {
		t.Fatalf("Serving with its own model live: %v", err)
	}

	// A live model of another file: this node cannot serve it.
	other := router.Model{ID: "other", Digest: digest, Version: 1, Layers: 1, Experts: 2, TopK: 1, Live: true}
	if err := c.Apply(ctx, router.Command{Op: router.OpSetModel, Model: &other}); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 10*time.Second, func() bool { return !x.Ready() }, "experts not ready for another model")
	if err := x.Serving(); err == nil || !strings.Contains(err.Error(), "digest "+digest[:12]) {
		t.Errorf("Serving with another model live: %v, want an error naming the live digest", err)
	}
	// and says so, rather than wait without a word.
	clustertest.WaitFor(t, 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "not the cluster's live model") && strings.Contains(logs.String(), "live_digest="+digest[:12])
	}, "a warning that the node's file is not the live model")
}

// lockedBuffer is a bytes.Buffer that node loggers and a test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
