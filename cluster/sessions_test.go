package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/api"
	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/cluster/clustertest"
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

type tLog struct{ t testing.TB }

func (w tLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestSessionAffinity: three nodes each serve the tiny model's API with a
// session router. A session's turns sent to different nodes all run on its
// home (the second turn hits the prefix cache the first one filled there);
// when the home is killed the next turn still succeeds, on a new home.
func TestSessionAffinity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster serving a model")
	}
	c, nodes, pool := startHosting(t, nil)
	var modelID string
	for i, n := range nodes {
		f, w, x := n.f, n.w, n.x
		tok, err := model.LoadTokenizer(f)
		if err != nil {
			t.Fatal(err)
		}
		modelID, _ = f.StringOr("general.name", "tiny")
		ecfg := engine.DefaultConfig()
		ecfg.KVBytes = 16 << 20
		e, err := engine.New(ecfg, w, pool, tok.IsEOG, engine.WithExperts(x.Runner()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		scfg := cluster.DefaultSessionConfig()
		scfg.Wait = 15 * time.Second
		sr, err := cluster.NewSessionRouter(c.Node(i), scfg)
		if err != nil {
			t.Fatal(err)
		}
		acfg := api.DefaultConfig()
		acfg.Sessions = sr
		acfg.Logger = slog.New(slog.NewTextHandler(tLog{t}, nil)).With("node", c.Node(i).ID())
		s, err := api.New(acfg, e, tok, api.ModelInfo{ID: modelID, Context: e.Ctx(), Dim: w.Dim})
		if err != nil {
			t.Fatal(err)
		}
		s.Register(c.Node(i).Mux())
	}
	c.WaitAgree(30*time.Second, func(m *router.Map) bool { return allReady(m) && len(m.ActiveNodes()) == 3 },
		"3 active nodes, every replica ready")

	const session = "chat-1"
	prompt := strings.Repeat("the quick brown fox jumps over the lazy dog. ", 3)
	turn := func(i int, prompt string) (cached int) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"model": modelID, "prompt": prompt, "max_tokens": 3,
			"temperature": 0, "session_id": session})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+c.Config(i).HTTPAddr+"/v1/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("turn via n%d: %v", i, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("turn via n%d: status %d: %s", i, resp.StatusCode, out)
		}
		var r struct {
			Usage struct {
				PromptTokens        int `json:"prompt_tokens"`
				PromptTokensDetails *struct {
					CachedTokens int `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("turn via n%d: %v: %s", i, err, out)
		}
		if d := r.Usage.PromptTokensDetails; d != nil {
			cached = d.CachedTokens
		}
		t.Logf("turn via n%d: %d prompt tokens, %d cached", i, r.Usage.PromptTokens, cached)
		return cached
	}
	index := func(id string) int {
		for i := 0; i < 3; i++ {
			if c.Config(i).ID == id {
				return i
			}
		}
		t.Fatalf("no node %q", id)
		return -1
	}

	// Turn 1 through n0 assigns the session a home and runs there.
	if cached := turn(0, prompt); cached != 0 {
		t.Errorf("first turn: %d cached tokens, want 0", cached)
	}
	m := c.WaitAgree(10*time.Second, func(m *router.Map) bool { _, ok := m.Sessions.Get(session); return ok }, "the session in every map")
	home := index(m.Sessions.At(session).Home)
	if o := m.Sessions.At(session).Owner; o != "ip:127.0.0.1" {
		t.Errorf("the session's owner is %q, want the client ip:127.0.0.1", o)
	}
	// Turn 2 enters through a node that is neither turn 1's nor the home.
	entry := 1
	if home == 1 {
		entry = 2
	}
	prompt += "and then the fox sleeps. "
	if cached := turn(entry, prompt); cached == 0 {
		t.Errorf("second turn via n%d (home n%d): no cached tokens: it did not run on the home", entry, home)
	}

	// Kill the home: the next turn still succeeds and the session moves.
	c.Kill(home)
	survivor := (home + 1) % 3
	prompt += "the dog wakes up. "
	turn(survivor, prompt)
	m = c.WaitMap(survivor, 15*time.Second, func(m *router.Map) bool {
		s, ok := m.Sessions.Get(session)
		return ok && s.Home != c.Config(home).ID
	}, "the session re-homed")
	newHome := index(m.Sessions.At(session).Home)
	// Its next turn, entering through the other survivor, reuses the new
	// home's cache.
	other := 3 - home - survivor
	prompt += "they play. "
	if cached := turn(other, prompt); cached == 0 {
		t.Errorf("turn after re-homing to n%d via n%d: no cached tokens", newHome, other)
	}
}

// modelSwitched is three nodes just after model B was made live: n1 and
// n2 run model A, n0 runs n0Serving (B, or A when no node runs the live
// model yet), and session "s" is homed on n1.
func modelSwitched(t *testing.T, n0Serving func(a, b string) string) (*clustertest.Cluster, context.Context, time.Time) {
	t.Helper()
	c := clustertest.New(t, 3, clustertest.Options{})
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	s0 := n0Serving(a, b)
	c.Node(0).SetServingForTest(s0)
	c.Node(1).SetServingForTest(a)
	c.Node(2).SetServingForTest(a)
	c.WaitAgree(20*time.Second, func(m *router.Map) bool {
		return m.Nodes["n0"].Serving == s0 && m.Nodes["n1"].Serving == a && m.Nodes["n2"].Serving == a
	}, "Serving gossiped into the map")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	now := time.Now()
	for _, cmd := range []router.Command{
		{Op: router.OpSetModel, Model: &router.Model{ID: "B", Digest: b, Layers: 1, Experts: 2, TopK: 1, Version: 1, Live: true}},
		{Op: router.OpAssignSession, NowMS: now.UnixMilli(), Session: &router.Session{ID: "s", Home: "n1", ExpiresMS: now.Add(time.Hour).UnixMilli()}},
	} {
		if err := c.Apply(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitMap(0, 10*time.Second, func(m *router.Map) bool { _, ok := m.Sessions.Get("s"); return ok && m.Model != nil }, "the session in n0's map")
	return c, ctx, now
}

// TestSessionsAvoidOtherModel: while a node runs another model than the
// live one (it refuses to generate), new sessions are homed elsewhere, a
// session homed there moves on its next route, and a re-home from a
// failed home never picks it.
func TestSessionsAvoidOtherModel(t *testing.T) {
	c, ctx, now := modelSwitched(t, func(a, b string) string { return b })
	sr, err := cluster.NewSessionRouter(c.Node(0), cluster.DefaultSessionConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if local, target, err := sr.Route(ctx, fmt.Sprintf("new-%d", i), "client"); err != nil || !local {
			t.Errorf("new session %d: local %v, target %q, %v; want n0, the only node running the live model", i, local, target, err)
		}
	}
	if local, target, err := sr.Route(ctx, "s", "client"); err != nil || !local {
		t.Errorf("a session homed on a node running another model: local %v, target %q, %v; want it moved to n0", local, target, err)
	}
	if err := c.Apply(ctx, router.Command{Op: router.OpAssignSession, NowMS: now.UnixMilli(), Session: &router.Session{ID: "s2", Home: "n1", ExpiresMS: now.Add(time.Hour).UnixMilli()}}); err != nil {
		t.Fatal(err)
	}
	c.WaitMap(0, 10*time.Second, func(m *router.Map) bool { _, ok := m.Sessions.Get("s2"); return ok }, "s2 in n0's map")
	if local, target, err := sr.Rehome(ctx, "s2", "client", "http://"+c.Config(1).HTTPAddr); err != nil || !local {
		t.Errorf("re-home from n1: local %v, target %q, %v; want n0, not n2 (another model)", local, target, err)
	}
}

// TestSessionNoLiveNodeKeepsHome: right after a model load no node runs the
// live model yet; a session's requests keep its home instead of waiting
// out a move that cannot happen, and write nothing to Raft per request.
func TestSessionNoLiveNodeKeepsHome(t *testing.T) {
	c, ctx, _ := modelSwitched(t, func(a, b string) string { return a })
	cfg := cluster.DefaultSessionConfig()
	cfg.Wait = 2 * time.Second
	sr, err := cluster.NewSessionRouter(c.Node(0), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e0 := c.Node(0).Map().Epoch
	for i := range 3 {
		if local, target, err := sr.Route(ctx, "s", "client"); err != nil || local || !strings.Contains(target, c.Config(1).HTTPAddr) {
			t.Errorf("route %d: local %v, target %q, %v; want n1, its home", i, local, target, err)
		}
	}
	if e := c.Node(0).Map().Epoch; e > e0+1 { // one touch at most
		t.Errorf("3 routes moved the epoch %d -> %d", e0, e)
	}
}
