package serve

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		mode   Mode
		bad    bool
	}{
		{"default", func(*Config) {}, ModeConcurrency, false},
		{"https with /v1", func(c *Config) { c.URL = "https://host:8443/v1" }, ModeConcurrency, false},
		{"duration only", func(c *Config) { c.Requests, c.Duration = 0, time.Second }, ModeConcurrency, false},
		{"rates", func(c *Config) { c.Rates = []float64{0.5, 2} }, ModeRate, false},
		{"sessions ignore requests", func(c *Config) { c.Sessions, c.Turns, c.Requests = 2, 2, 0 }, ModeSessions, false},
		{"no scheme", func(c *Config) { c.URL = "127.0.0.1:8080" }, ModeConcurrency, true},
		{"bad endpoint", func(c *Config) { c.Endpoint = "embeddings" }, ModeConcurrency, true},
		{"bad prompt", func(c *Config) { c.Prompt = Fixed(0) }, ModeConcurrency, true},
		{"bad turn prompt", func(c *Config) { c.TurnPrompt = Dist{} }, ModeConcurrency, true},
		{"no levels", func(c *Config) { c.Concurrency = nil }, ModeConcurrency, true},
		{"zero concurrency", func(c *Config) { c.Concurrency = []int{1, 0} }, ModeConcurrency, true},
		{"zero rate", func(c *Config) { c.Rates = []float64{0} }, ModeRate, true},
		{"no bound", func(c *Config) { c.Requests = 0 }, ModeConcurrency, true},
		{"no timeout", func(c *Config) { c.Timeout = 0 }, ModeConcurrency, true},
		{"sessions without turns", func(c *Config) { c.Sessions, c.Turns = 2, 0 }, ModeSessions, true},
		{"sessions and rates", func(c *Config) { c.Sessions, c.Turns, c.Rates = 2, 2, []float64{1} }, ModeSessions, true},
		{"sampling", func(c *Config) { c.Temperature, c.TopP = ptr(0.0), ptr(1.0) }, ModeConcurrency, false},
		{"temperature above 2", func(c *Config) { c.Temperature = ptr(2.5) }, ModeConcurrency, true},
		{"NaN temperature", func(c *Config) { c.Temperature = ptr(math.NaN()) }, ModeConcurrency, true},
		{"zero top_p", func(c *Config) { c.TopP = ptr(0.0) }, ModeConcurrency, true},
		{"top_p above 1", func(c *Config) { c.TopP = ptr(1.5) }, ModeConcurrency, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.change(&c)
			if c.Mode() != tc.mode {
				t.Errorf("mode %s, want %s", c.Mode(), tc.mode)
			}
			err := c.Validate()
			if tc.bad != (err != nil) || err != nil && !errors.Is(err, ErrConfig) {
				t.Errorf("Validate = %v, want error %v", err, tc.bad)
			}
		})
	}
}

func ptr(v float64) *float64 { return &v }
