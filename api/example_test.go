package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/conclave-ai/conclave/api"
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

// Serve a GGUF model over the OpenAI API and ask it for a completion.
func Example() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "tiny.gguf")
	cfg, _ := synth.Preset("tiny")
	if err := synth.Write(cfg, path); err != nil {
		panic(err)
	}
	f, _ := gguf.Open(path)
	defer f.Close()
	w, _ := model.Load(f)
	tok, _ := model.LoadTokenizer(f)

	pool := kernels.NewPool(2)
	defer pool.Close()
	ecfg := engine.DefaultConfig()
	ecfg.KVBytes = 16 << 20
	eng, err := engine.New(ecfg, w, pool, tok.IsEOG)
	if err != nil {
		panic(err)
	}
	defer eng.Close()

	acfg := api.DefaultConfig()
	acfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil)) // requests are logged here
	srv, err := api.New(acfg, eng, tok, api.ModelInfo{ID: "tiny", Context: eng.Ctx(), Dim: w.Dim})
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv.Handler()) // or srv.Register(node.Mux())
	defer hs.Close()

	resp, err := http.Post(hs.URL+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"tiny","prompt":"hello","max_tokens":4,"ignore_eos":true}`))
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, strings.Contains(string(body), `"completion_tokens":4`))

	// On SIGTERM: stop admitting, let streams finish, then close the engine.
	ctx, cancel := context.WithTimeout(context.Background(), 30e9)
	defer cancel()
	fmt.Println(srv.Drain(ctx))
	// Output:
	// 200 OK true
	// <nil>
}
