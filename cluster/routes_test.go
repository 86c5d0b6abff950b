package cluster_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
)

// TestConfigRoutes: routes a Config adds are on the node's mux before its
// listener serves, beside the admin API. The OpenAI API's were added only
// once Start returned, so a node joining slowly answered them 404 for
// seconds.
func TestConfigRoutes(t *testing.T) {
	var registered bool
	c := clustertest.New(t, 1, clustertest.Options{Config: func(int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.Routes = func(mux *http.ServeMux) {
			registered = true
			mux.HandleFunc("GET /probe", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "probe") })
		}
		return cfg
	}})
	if !registered {
		t.Fatal("Routes was not called")
	}
	for _, path := range []string{"/probe", "/admin/v1/status"} {
		resp, err := http.Get("http://" + c.Node(0).Config().HTTPAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || path == "/probe" && string(b) != "probe" {
			t.Errorf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
}
