package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"negative rate":        func(c *Config) { c.RequestsPerSecond = -1 },
		"rate without burst":   func(c *Config) { c.RequestsPerSecond = 5 },
		"negative concurrency": func(c *Config) { c.MaxConcurrentPerKey = -1 },
		"tiny body":            func(c *Config) { c.MaxBodyBytes = 10 },
		"negative max tokens":  func(c *Config) { c.DefaultMaxTokens = -1 },
		"blank key":            func(c *Config) { c.APIKeys = []string{"ok", " "} },
	} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mut(&c)
			if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

// Register mounts next to a node's admin routes without conflicts, and
// leaves the node's other paths alone.
func TestRegisterOnNodeMux(t *testing.T) {
	f := newFixture(t, DefaultConfig(), noEngine{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("admin")) })
	mux.HandleFunc("GET /admin/v1/status", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("status")) })
	f.srv.Register(mux)
	for path, want := range map[string]int{"/healthz": 200, "/admin/v1/status": 200, "/v1/models": 200, "/ready": 200, "/metrics": 200, "/v1/x": 404} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}
