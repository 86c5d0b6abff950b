package cluster_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// TestFetchedExpertsServeModel: only n0 has the model file; n1 and n2
// fetch their copies (FetchModel), host the experts the map gives them from
// those partial files (StartExpertsFrom), and engines on n1 and n2 decode
// exactly what a single engine over the whole file decodes.
func TestFetchedExpertsServeModel(t *testing.T) {
	path := testmodel.Write(t, testmodel.Config(t, "demo", nil))
	c := clustertest.New(t, 3, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		if i == 0 {
			cfg.ModelPath = path
		}
		cfg.Replication = 1
		// Guarded admin APIs: the fetches carry the cluster key's token,
		// the requests below the admin key.
		cfg.ClusterKey = []byte("0123456789abcdef")
		cfg.AdminKeys = []string{"adm"}
		return cfg
	}})
	pool := kernels.NewPool(2)
	t.Cleanup(pool.Close)
	dc := dispatch.DefaultConfig()
	dc.Timeout = 5 * time.Second

	_, w0 := testmodel.Open(t, path)
	x0, err := c.Node(0).StartExperts(w0, pool, dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x0.Close)
	c.WaitAgree(30*time.Second, func(m *router.Map) bool {
		return m.Model != nil && len(cluster.ModelHosts(m, m.Model.Digest)) == 1
	}, "the model set, n0 its holder")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type partial struct {
		copy *cluster.ModelCopy
		w    *model.Weights
		x    *cluster.Experts
	}
	var parts []partial
	for i := 1; i <= 2; i++ {
		n := c.Node(i)
		mc, err := n.FetchModel(ctx, *n.Map().Model)
		if err != nil {
			t.Fatalf("%s: %v", n.ID(), err)
		}
		t.Cleanup(func() { mc.Close() })
		_, w := testmodel.Open(t, mc.Path())
		x, err := n.StartExpertsFrom(w, pool, dc, mc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(x.Close)
		parts = append(parts, partial{mc, w, x})
	}
	c.WaitAgree(60*time.Second, func(m *router.Map) bool {
		return allReady(m) && len(m.ExpertsOn("n1")) > 0 && len(m.ExpertsOn("n2")) > 0
	}, "every replica ready, n1 and n2 hosting")

	m := c.Node(0).Map()
	for i, p := range parts {
		st := p.copy.Stats()
		id := c.Node(i + 1).ID()
		t.Logf("%s: %d experts, held %d of %d bytes (%d/%d chunks), fetched %d", id, len(m.ExpertsOn(id)),
			st.HeldBytes, st.Size, st.HeldChunks, st.Chunks, st.FetchedBytes)
		if st.HeldBytes >= st.Size {
			t.Errorf("%s holds the whole file", id)
		}
		for _, e := range m.ExpertsOn(id) {
			if !p.copy.Holds(e) {
				t.Errorf("%s hosts expert %v without holding its bytes", id, e)
			}
		}
		if status := c.Node(i + 1).Status().ModelFile; status == nil || status.State != "partial" {
			t.Errorf("%s status model file %+v, want partial", id, status)
		}
	}
	if f := c.Node(0).Status().ModelFile; f == nil || f.State != "held" {
		t.Errorf("n0 status model file %+v, want held", f)
	}
	// Partial copies are not advertised: n0 stays the only holder, and
	// only it serves the manifest and chunks.
	if hosts := cluster.ModelHosts(m, m.Model.Digest); !slices.Equal(hosts, []string{"n0"}) {
		t.Errorf("model hosts %v, want [n0]", hosts)
	}
	digest := m.Model.Digest
	for _, tc := range []struct {
		name   string
		node   int
		path   string
		status int
	}{
		{"manifest", 0, "/admin/v1/models/" + digest + "/manifest", http.StatusOK},
		{"chunk", 0, "/admin/v1/models/" + digest + "/chunks/3", http.StatusOK},
		{"chunk out of range", 0, "/admin/v1/models/" + digest + "/chunks/100000", http.StatusBadRequest},
		{"unknown digest", 0, "/admin/v1/models/" + strings.Repeat("0", 64) + "/manifest", http.StatusNotFound},
		{"partial node", 1, "/admin/v1/models/" + digest + "/chunks/0", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+c.Config(tc.node).HTTPAddr+tc.path, nil)
			req.Header.Set("Authorization", "Bearer adm")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("GET %s: %d %s, want %d", tc.path, resp.StatusCode, b, tc.status)
			}
			if tc.name == "manifest" {
				if _, err := cluster.ParseManifest(b, digest); err != nil {
					t.Error(err)
				}
			}
		})
	}

	if !clustertest.ActorRemotes() {
		t.Skip("decoding needs the actor remote (off under -race): partial nodes cannot compute other nodes' experts")
	}
	prompts := [][]int32{{1, 300, 301, 302}, {1, 17, 42, 99, 100, 7, 8, 9}}
	run := func(w *model.Weights, r model.ExpertRunner) [][]int32 {
		ecfg := engine.DefaultConfig()
		ecfg.KVBytes = 16 << 20
		var opts []engine.Option
		if r != nil {
			opts = append(opts, engine.WithExperts(r))
		}
		e, err := engine.New(ecfg, w, pool, nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		out := make([][]int32, len(prompts))
		for i, p := range prompts {
			ch, err := e.Submit(ctx, engine.Request{Prompt: p, MaxTokens: 8})
			if err != nil {
				t.Fatal(err)
			}
			for ev := range ch {
				if ev.Err != nil {
					t.Fatal(ev.Err)
				}
				if ev.HasToken {
					out[i] = append(out[i], ev.Token)
				}
			}
		}
		return out
	}
	want := run(w0, nil)
	for i, p := range parts {
		got := run(p.w, p.x.Runner())
		for j := range want {
			if !slices.Equal(got[j], want[j]) {
				t.Errorf("n%d prompt %d: %v, want %v", i+1, j, got[j], want[j])
			}
		}
		if st := p.x.Dispatcher().Stats(); st.Fallbacks != 0 {
			t.Errorf("n%d used the fallback %d times", i+1, st.Fallbacks)
		}
		t.Logf("n%d dispatcher: %+v", i+1, p.x.Dispatcher().Stats())
	}
}
