package cluster_test

import (
	"testing"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
)

// hostingNode is one node of a hosting cluster: its own mapping of the
// model file and the expert host and dispatcher on it.
type hostingNode struct {
	f *gguf.File
	w *model.Weights
	x *cluster.Experts
}

// startHosting starts 3 nodes with the tiny synthesized model, replication 1
// (edit may change each node's config), each hosting the experts the map
// gives it over its own mapping of the file, as separate processes would.
// The nodes share one 2-thread pool, closed when the test ends.
func startHosting(t *testing.T, edit func(*cluster.Config)) (*clustertest.Cluster, []hostingNode, *kernels.Pool) {
	t.Helper()
	path := testmodel.Write(t, testmodel.Config(t, "tiny", nil))
	c := clustertest.New(t, 3, clustertest.Options{Config: func(i int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.ModelPath = path
		cfg.Replication = 1
		if edit != nil {
			edit(&cfg)
		}
		return cfg
	}})
	pool := kernels.NewPool(2)
	t.Cleanup(pool.Close)
	var nodes []hostingNode
	for i := range 3 {
		f, w := testmodel.Open(t, path)
		dc := dispatch.DefaultConfig()
		dc.Timeout = time.Second
		x, err := c.Node(i).StartExperts(w, pool, dc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(x.Close)
		nodes = append(nodes, hostingNode{f: f, w: w, x: x})
	}
	return c, nodes, pool
}
