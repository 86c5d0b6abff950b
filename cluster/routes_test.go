package cluster_test

import (
	"io"
	"net/http"
	"strings"
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

// TestConfigNotFound: Config.NotFound answers what no route matches under
// any method; a route's path under another method keeps the mux's 405 and
// an unclean path its redirect.
func TestConfigNotFound(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Options{Config: func(int) cluster.Config {
		cfg := clustertest.FastConfig()
		cfg.Routes = func(mux *http.ServeMux) {
			mux.HandleFunc("GET /probe", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "probe") })
			mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api") })
		}
		cfg.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "custom")
		})
		return cfg
	}})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "http://" + c.Node(0).Config().HTTPAddr
	for _, tc := range []struct {
		method, path string
		status       int
		body         string // "" : any
	}{
		{"GET", "/probe", 200, "probe"},
		{"GET", "/api/x", 200, "api"},
		{"GET", "/admin/v1/status", 200, ""},
		{"GET", "/", 404, "custom"},
		{"POST", "/nope", 404, "custom"},
		{"GET", "/Probe", 404, "custom"},
		{"POST", "/probe", 405, ""},
		{"GET", "/admin/v1/drain/n0", 405, ""},
		{"GET", "/api", 307, ""},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || tc.body != "" && string(b) != tc.body {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.body)
		}
		if tc.status == http.StatusMethodNotAllowed && (resp.Header.Get("Content-Type") != "application/json" ||
			!strings.Contains(string(b), `"method_not_allowed"`) || resp.Header.Get("Allow") == "") {
			t.Errorf("%s %s: a 405 without a JSON body or Allow: %q %q %s", tc.method, tc.path,
				resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), b)
		}
	}
}
