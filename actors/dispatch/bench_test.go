package dispatch_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/router"
)

// BenchmarkCall16KiB measures one expert call carrying 16 KiB of
// activations (64 rows of the tiny model's 64 floats) each way: the
// in-process fast path, a message to an actor on the same actor system,
// and a message over protoactor remote on loopback. The expert's compute
// is included in all three; the differences are the transport.
func BenchmarkCall16KiB(b *testing.B) { benchCall(b, 64) }

// BenchmarkCall256B is BenchmarkCall16KiB with one row (256 bytes each
// way): mostly the fixed cost of a call.
func BenchmarkCall256B(b *testing.B) { benchCall(b, 1) }

func benchCall(b *testing.B, rows int) {
	if raceEnabled {
		b.Skip("remotes race upstream")
	}
	w := loadModel(b, "tiny")
	in := make([]float32, rows*w.Dim)
	for i := range in {
		in[i] = float32(i%17)/9 - 0.9
	}
	out := make([]float32, rows*w.Dim)
	id := router.ExpertID{Layer: 0, Index: 1}
	tn := newNet(b, w, 2, netOptions{})
	req := func() *expert.ComputeRequest {
		return &expert.ComputeRequest{Layer: 0, Expert: 1, Rows: int32(rows), Dim: int32(w.Dim), Activations: expert.AppendFloats(nil, in)}
	}
	holder := func() *testNode {
		for _, nd := range tn.nodes {
			if _, ok := nd.host.LocalVersion(id, ""); ok {
				return nd
			}
		}
		b.Fatal("nobody hosts the expert")
		return nil
	}()
	other := tn.nodes[0]
	if other == holder {
		other = tn.nodes[1]
	}
	b.Run("direct", func(b *testing.B) {
		e, _ := holder.host.LocalVersion(id, "")
		b.SetBytes(int64(8 * len(in)))
		for b.Loop() {
			e.Forward(in, rows, out)
		}
	})
	b.Run("actor-local", func(b *testing.B) {
		b.SetBytes(int64(8 * len(in)))
		for b.Loop() {
			if _, err := holder.sys.Root.RequestFuture(expert.PID(holder.addr, id), req(), 5*time.Second).Result(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("actor-remote-loopback", func(b *testing.B) {
		b.SetBytes(int64(8 * len(in)))
		for b.Loop() {
			if _, err := other.sys.Root.RequestFuture(expert.PID(holder.addr, id), req(), 5*time.Second).Result(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeStep measures one decode step (every sequence of the batch
// advances one token) through the dispatcher on 1 node (all experts in
// process) and on 3 nodes over loopback, with the tiny and demo models.
// It reports ms per step, ms per token and wire bytes per token.
// CONCLAVE_DISPATCH_BENCH_PRESETS=bench (comma-separated) picks other presets.
func BenchmarkDecodeStep(b *testing.B) {
	if raceEnabled {
		b.Skip("remotes race upstream")
	}
	presets := []string{"tiny", "demo"}
	if p := os.Getenv("CONCLAVE_DISPATCH_BENCH_PRESETS"); p != "" {
		presets = strings.Split(p, ",") // e.g. "bench": slow to synthesize, so opt-in
	}
	for _, preset := range presets {
		w := loadModel(b, preset)
		for _, nodes := range []int{1, 3} {
			for _, batch := range []int{1, 16} {
				b.Run(fmt.Sprintf("%s/nodes=%d/batch=%d", preset, nodes, batch), func(b *testing.B) {
					tn := newNet(b, w, nodes, netOptions{})
					benchDecode(b, w, tn.pool, tn.nodes[0].disp, batch)
				})
				if nodes > 1 {
					// Each node with its own pool, as separate processes:
					// three 2-thread pools time-share the two cores.
					b.Run(fmt.Sprintf("%s/nodes=%d/batch=%d/own-pools", preset, nodes, batch), func(b *testing.B) {
						tn := newNet(b, w, nodes, netOptions{ownPools: true})
						benchDecode(b, w, tn.pool, tn.nodes[0].disp, batch)
					})
				}
			}
		}
		b.Run(preset+"/plain-runner/batch=1", func(b *testing.B) {
			pool := kernels.NewPool(2)
			defer pool.Close()
			benchDecode(b, w, pool, nil, 1)
		})
	}
}

func benchDecode(b *testing.B, w *model.Weights, pool *kernels.Pool, d *dispatch.Dispatcher, batch int) {
	r := model.NewRunner(w, pool, batch)
	caches := make([]*kvcache.Cache, batch)
	for i := range caches {
		c, err := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: w.Ctx, KVDim: w.KVDim(), Type: kernels.F16})
		if err != nil {
			b.Fatal(err)
		}
		caches[i] = c
	}
	bt := model.Batch{Tokens: make([]int32, batch), Pos: make([]int32, batch), Seqs: caches, Logits: make([]bool, batch)}
	for i := range bt.Logits {
		bt.Logits[i] = true
	}
	var experts model.ExpertRunner
	if d != nil {
		experts = d
	}
	var before dispatch.Stats
	if d != nil {
		before = d.Stats()
	}
	steps := 0
	start := time.Now()
	for b.Loop() {
		pos := steps % (w.Ctx - 1)
		if pos == 0 && steps > 0 {
			for _, c := range caches {
				c.Truncate(0)
			}
		}
		for i := range bt.Tokens {
			bt.Tokens[i] = int32((7*steps + 13*i) % w.Vocab)
			bt.Pos[i] = int32(pos)
		}
		if _, err := r.Forward(context.Background(), &bt, experts); err != nil {
			b.Fatal(err)
		}
		steps++
	}
	el := time.Since(start)
	b.ReportMetric(float64(el.Microseconds())/1000/float64(steps), "ms/step")
	b.ReportMetric(float64(el.Microseconds())/1000/float64(steps*batch), "ms/token")
	if d != nil {
		l := d.Latency()
		b.ReportMetric(float64(l.Sum.Microseconds())/1000/float64(steps), "ms-experts/step")
		st := d.Stats()
		b.ReportMetric(float64(st.BytesSent+st.BytesRecv-before.BytesSent-before.BytesRecv)/float64(steps*batch), "wireB/token")
	}
}
