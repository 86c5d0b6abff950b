package serve_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"

	"github.com/conclave-ai/conclave/bench/serve"
)

func ExampleParseDist() {
	d, err := serve.ParseDist("uniform:64-512")
	if err != nil {
		panic(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	n := d.Sample(r)
	fmt.Println(d, d.Mean(), n >= 64 && n <= 512)
	// Output: uniform:64-512 288 true
}

func ExampleSummarize() {
	ttft := []float64{120, 80, 95, 400, 101} // ms
	s := serve.Summarize(ttft)
	fmt.Printf("n=%d mean=%.1f p50=%.1f p90=%.1f p99=%.1f\n", s.N, s.Mean, s.P50, s.P90, s.P99)
	// Output: n=5 mean=159.2 p50=101.0 p90=288.0 p99=388.8
}

// ExampleRun measures a stand-in server that streams two words per request.
func ExampleRun() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			fmt.Fprint(w, `{"data":[{"id":"demo"}]}`)
			return
		}
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n"+
			"data: {\"choices\":[{\"delta\":{\"content\":\" world\"},\"finish_reason\":\"length\"}]}\n\n"+
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":2}}\n\n"+
			"data: [DONE]\n\n")
	}))
	defer srv.Close()

	c := serve.DefaultConfig()
	c.URL = srv.URL
	c.Concurrency = []int{1, 2}
	c.Requests = 4
	rep, err := serve.Run(context.Background(), c, serve.Options{})
	if err != nil {
		panic(err)
	}
	for _, l := range rep.Levels {
		fmt.Printf("%s %s: %d/%d ok, %d output tokens, %d prompt tokens\n",
			rep.Target.Model, l.Name(), l.Completed, l.Requests, l.OutputTokens, l.PromptTokens)
	}
	// Output:
	// demo c=1: 4/4 ok, 8 output tokens, 80 prompt tokens
	// demo c=2: 4/4 ok, 8 output tokens, 80 prompt tokens
}
