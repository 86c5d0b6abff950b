package cluster_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

// TestHotExpertUpdate: one expert of a running 3-node cluster (replication
// 2) is replaced by the same expert of another model through the admin API
// while a node keeps dispatching to it, then rolled back. Every answer is
// exactly the old or the new version's output, none fails, and after each
// flip the node computes only the new live version.
func TestHotExpertUpdate(t *testing.T) {
	// Guarded admin APIs: the CLI side sends the admin key, and the hosts
	// fetch the uploaded file from n1 with the cluster key's token.
	c, nodes, _ := startHosting(t, func(cfg *cluster.Config) {
		cfg.Replication = 2
		cfg.ClusterKey = []byte("0123456789abcdef")
		cfg.AdminKeys = []string{"adm"}
	})
	c.WaitAgree(30*time.Second, allReady, "every replica ready")
	id := router.ExpertID{Layer: 1, Index: 1}
	w1 := nodes[0].w
	_, w2 := testmodel.Load(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.Seed = 7 }))
	file, err := model.EncodeExpertFile(w2, id.Layer, id.Index, "tiny seed 7")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(file)
	digest := hex.EncodeToString(sum[:])

	// Reference outputs of both versions for a fixed batch.
	const rows = 3
	in := make([]float32, rows*w1.Dim)
	for i := range in {
		in[i] = float32(i%13)/6 - 1
	}
	want1, want2 := make([]float32, len(in)), make([]float32, len(in))
	var s model.ExpertScratch
	w1.Blocks[id.Layer].Experts[id.Index].Forward(nil, &s, in, rows, want1)
	w2.Blocks[id.Layer].Experts[id.Index].Forward(nil, &s, in, rows, want2)
	if slices.Equal(want1, want2) {
		t.Fatal("the two versions compute the same")
	}

	// n0 dispatches the expert continuously throughout.
	disp := nodes[0].x.Runner()
	var calls, v1s, v2s atomic.Int64
	var last atomic.Int32 // 1 or 2: the version of the latest answer
	stop := make(chan struct{})
	var stopOnce sync.Once
	var wg sync.WaitGroup
	var failure error
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	t.Cleanup(halt) // before the nodes stop and unmap the expert files
	wg.Add(1)
	go func() {
		defer wg.Done()
		out := make([]float32, len(in))
		for {
			select {
			case <-stop:
				return
			default:
			}
			g := []model.ExpertGroup{{Expert: id.Index, Rows: []int32{0, 1, 2}, In: in, Out: out}}
			if err := disp.RunExperts(context.Background(), id.Layer, g); err != nil {
				failure = err
				return
			}
			calls.Add(1)
			switch {
			case slices.Equal(out, want1):
				v1s.Add(1)
				last.Store(1)
			case slices.Equal(out, want2):
				v2s.Add(1)
				last.Store(2)
			default:
				failure = errors.New("an answer is neither version's output")
				return
			}
		}
	}()
	waitCalls := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for start := calls.Load(); calls.Load() < start+n; {
			if failure != nil || time.Now().After(deadline) {
				t.Fatalf("dispatching stopped: %v (stats %+v, map %+v)", failure, nodes[0].x.Dispatcher().Stats(), c.Node(0).Map().Placement[id])
			}
			time.Sleep(time.Millisecond) // polling a counter another goroutine bumps
		}
	}
	waitCalls(20)

	ac := &cluster.AdminClient{Base: "http://" + c.Config(1).HTTPAddr, Key: "adm"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Bad uploads and requests are refused with clear errors.
	var apiErr *cluster.APIError
	if _, err := ac.PutExpertFile(ctx, digest, file[:len(file)-1]); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Fatalf("truncated upload: %v", err)
	}
	if _, err := ac.UpdateExpert(ctx, cluster.ExpertUpdateRequest{Expert: id, Version: digest}); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Fatalf("update before upload: %v", err)
	}
	if _, err := ac.RollbackExpert(ctx, cluster.ExpertUpdateRequest{Expert: id}); !errors.As(err, &apiErr) || apiErr.Status != 409 {
		t.Fatalf("rollback with no previous version: %v", err)
	}
	_, wide := testmodel.Load(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.FFN *= 2 }))
	misfit, _ := model.EncodeExpertFile(wide, id.Layer, id.Index, "")
	ms := sha256.Sum256(misfit)
	if _, err := ac.PutExpertFile(ctx, hex.EncodeToString(ms[:]), misfit); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Fatalf("upload of an expert of another shape: %v", err)
	}
	// The refused file is not stored: an update naming it is refused at
	// once (it used to stage, and wait out the timeout).
	if _, err := ac.UpdateExpert(ctx, cluster.ExpertUpdateRequest{Expert: id, Version: hex.EncodeToString(ms[:])}); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Fatalf("update with a refused upload: %v", err)
	}
	// A file of another expert fits the model but is not this expert.
	other, _ := model.EncodeExpertFile(w2, 0, 0, "")
	od := sha256.Sum256(other)
	if _, err := ac.PutExpertFile(ctx, hex.EncodeToString(od[:]), other); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.UpdateExpert(ctx, cluster.ExpertUpdateRequest{Expert: id, Version: hex.EncodeToString(od[:])}); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Fatalf("update of %v with expert (0, 0)'s file: %v", id, err)
	}

	// Update: upload to n1, which stages the version; hosts without the
	// file fetch it from n1.
	if _, err := ac.PutExpertFile(ctx, digest, file); err != nil {
		t.Fatal(err)
	}
	rep, err := ac.UpdateExpert(ctx, cluster.ExpertUpdateRequest{Expert: id, Version: digest})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("update: %d replicas loaded the new version in %d ms (epoch %d)", rep.Replicas, rep.StagedMS, rep.Epoch)
	if rep.State.Live != digest || rep.Replicas != 2 || rep.State.Prev != router.BaseVersion || !rep.State.HasPrev {
		t.Fatalf("update reply %+v", rep)
	}
	// The answer comes once every node has applied the flip: each one's
	// next dispatch uses the new version (no waiting here).
	if rep.Nodes != 3 || rep.Applied != 3 {
		t.Errorf("update applied on %d of %d nodes, want 3 of 3", rep.Applied, rep.Nodes)
	}
	for _, i := range c.Running() {
		if v := c.Node(i).Map().LiveVersion(id); v != digest {
			t.Errorf("n%d's map has live version %.12s when the update returns, want %.12s", i, v, digest)
		}
	}
	// Updating to the live version changes nothing and answers at once
	// (it used to wait out the timeout for a staging that never starts).
	if rep, err := ac.UpdateExpert(ctx, cluster.ExpertUpdateRequest{Expert: id, Version: digest}); err != nil || rep.State.Live != digest || rep.State.Updates != 1 {
		t.Fatalf("update to the live version: %+v, %v", rep, err)
	}
	waitCalls(5)
	v1Before := v1s.Load()
	waitCalls(20)
	if v1s.Load() != v1Before || last.Load() != 2 {
		t.Fatalf("old version still answered after the flip (%d → %d)", v1Before, v1s.Load())
	}
	for i, n := range nodes {
		if vs := n.x.Host().Versions(id); len(vs) > 0 && !slices.Equal(vs, []string{router.BaseVersion, digest}) {
			t.Errorf("n%d runs versions %q, want base (for rollback) and the new one", i, vs)
		}
	}

	// Rollback through another node.
	ac2 := &cluster.AdminClient{Base: "http://" + c.Config(2).HTTPAddr, Key: "adm"}
	rep, err = ac2.RollbackExpert(ctx, cluster.ExpertUpdateRequest{Expert: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rollback: %d replicas in %d ms", rep.Replicas, rep.StagedMS)
	if rep.State.Live != router.BaseVersion || rep.State.Prev != digest || rep.State.Updates != 2 || !rep.State.RolledBack {
		t.Fatalf("rollback reply %+v", rep)
	}
	// A second rollback (a retry, say) would flip forward again: refused.
	if _, err := ac2.RollbackExpert(ctx, cluster.ExpertUpdateRequest{Expert: id}); !errors.As(err, &apiErr) || apiErr.Status != 409 {
		t.Fatalf("a second rollback: %v, want 409", err)
	}
	if rep.Nodes != 3 || rep.Applied != 3 {
		t.Errorf("rollback applied on %d of %d nodes, want 3 of 3", rep.Applied, rep.Nodes)
	}
	for _, i := range c.Running() {
		if v := c.Node(i).Map().ExpertVersions[id]; v.Live != router.BaseVersion || v.Updates != 2 {
			t.Errorf("n%d's map has %+v when the rollback returns, want base live", i, v)
		}
	}
	waitCalls(5)
	v2Before := v2s.Load()
	waitCalls(20)
	halt()
	if failure != nil {
		t.Fatal(failure)
	}
	if v2s.Load() != v2Before || last.Load() != 1 {
		t.Fatalf("new version still answered after the rollback")
	}
	t.Logf("%d dispatches: %d old version, %d new, 0 failed", calls.Load(), v1s.Load(), v2s.Load())
	t.Logf("n0 dispatcher: %+v", nodes[0].x.Dispatcher().Stats())
}
