package cluster_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/conclave-ai/conclave/cluster"
)

func TestFaultInjectionAPI(t *testing.T) {
	c, _, _ := startHosting(t, func(cfg *cluster.Config) { cfg.FaultInjection = true })
	base := "http://" + c.Config(0).HTTPAddr + "/admin/v1/fault"
	call := func(method, body string) (int, cluster.FaultsReply) {
		t.Helper()
		req, _ := http.NewRequest(method, base, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r cluster.FaultsReply
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("%s: %v: %s", method, err, b)
			}
		}
		return resp.StatusCode, r
	}
	for _, tc := range []struct {
		name, method, body string
		status, faults     int
	}{
		{"none yet", "GET", "", 200, 0},
		{"set", "POST", `{"expert":{"layer":1,"index":2},"delay_ms":250}`, 200, 1},
		{"another", "POST", `{"expert":{"layer":0,"index":0},"delay_ms":10}`, 200, 2},
		{"clear one", "POST", `{"expert":{"layer":0,"index":0},"delay_ms":0}`, 200, 1},
		{"no such expert", "POST", `{"expert":{"layer":9,"index":0},"delay_ms":10}`, 400, -1},
		{"negative delay", "POST", `{"expert":{"layer":0,"index":0},"delay_ms":-1}`, 400, -1},
		{"too long", "POST", `{"expert":{"layer":0,"index":0},"delay_ms":600000}`, 400, -1},
		{"unknown field", "POST", `{"expert":{"layer":0,"index":0},"delay":1}`, 400, -1},
		{"not json", "POST", `{`, 400, -1},
		{"still one", "GET", "", 200, 1},
		{"clear all", "DELETE", "", 200, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, r := call(tc.method, tc.body)
			if status != tc.status || (tc.faults >= 0 && len(r.Faults) != tc.faults) {
				t.Errorf("%s %s: status %d faults %+v; want %d with %d", tc.method, tc.body, status, r.Faults, tc.status, tc.faults)
			}
		})
	}
}

func TestFaultInjectionOffByDefault(t *testing.T) {
	c, _, _ := startHosting(t, nil)
	resp, err := http.Post("http://"+c.Config(0).HTTPAddr+"/admin/v1/fault", "application/json",
		strings.NewReader(`{"expert":{"layer":0,"index":0},"delay_ms":10}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /admin/v1/fault without FaultInjection: %d", resp.StatusCode)
	}
}
