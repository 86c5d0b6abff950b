package expert

import (
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

// slowStop is an actor that, told to stop, signals and then holds its
// stop until released, as an expert actor draining a queue does.
type slowStop struct{ stopping, release chan struct{} }

func (s *slowStop) Receive(c actor.Context) {
	if _, ok := c.Message().(*actor.Stopping); ok {
		close(s.stopping)
		<-s.release
	}
}

// TestStartWaitsWithoutTheLock: starting a version whose previous actor is
// still stopping waits for it without the host's lock, so LocalVersion,
// which every dispatch calls, answers meanwhile.
func TestStartWaitsWithoutTheLock(t *testing.T) {
	_, w := testmodel.Load(t, testmodel.Config(t, "tiny", nil))
	pool := kernels.NewPool(1)
	defer pool.Close()
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	h := NewHost(sys, w, pool, nil)
	other, id := router.ExpertID{Layer: 0, Index: 1}, router.ExpertID{Layer: 0, Index: 0}
	if err := h.Start(other); err != nil {
		t.Fatal(err)
	}
	old := &slowStop{stopping: make(chan struct{}), release: make(chan struct{})}
	if _, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return old }), VersionName(id, router.BaseVersion)); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- h.Start(id) }()
	<-old.stopping // Start found the name taken and is waiting for the old actor
	looked := make(chan bool, 1)
	go func() {
		_, ok := h.LocalVersion(other, router.BaseVersion)
		looked <- ok
	}()
	select {
	case ok := <-looked:
		if !ok {
			t.Error("LocalVersion does not find a running expert")
		}
	case <-time.After(10 * time.Second):
		t.Error("LocalVersion waited for another version's start")
	}
	close(old.release)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	if _, ok := h.LocalVersion(id, router.BaseVersion); !ok {
		t.Error("the version did not start after its old actor stopped")
	}
}

// TestVersionNameCollision: two versions of an expert whose names share the
// 16 hex digits an actor name keeps cannot both run. The second replaced the
// first's actor under the same name, so calls addressed to the first
// computed the second's weights.
func TestVersionNameCollision(t *testing.T) {
	_, w := testmodel.Load(t, testmodel.Config(t, "tiny", nil))
	_, w1 := testmodel.Load(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.Seed = 11 }))
	_, w2 := testmodel.Load(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.Seed = 22 }))
	pool := kernels.NewPool(1)
	defer pool.Close()
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	h := NewHost(sys, w, pool, nil)
	defer h.Close()
	prefix := strings.Repeat("c", 16)
	v1, v2 := prefix+strings.Repeat("1", 48), prefix+strings.Repeat("2", 48)
	src := map[string]*model.Weights{v1: w1, v2: w2}
	h.SetVersionSource(func(id router.ExpertID, v string) (*model.Expert, error) {
		return src[v].FeedForward(id.Layer, id.Index), nil
	})
	id := router.ExpertID{Layer: 0, Index: 0}
	if err := h.SyncVersions(map[router.ExpertID][]string{id: {v1, v2}}); !errors.Is(err, ErrVersionCollision) {
		t.Fatalf("SyncVersions: %v, want ErrVersionCollision", err)
	}
	if _, ok := h.LocalVersion(id, v2); ok {
		t.Error("the colliding version runs")
	}
	in := make([]float32, w.Dim)
	for i := range in {
		in[i] = float32(i%9)/9 - 0.4
	}
	want := make([]float32, w.Dim)
	var s model.ExpertScratch
	w1.FeedForward(0, 0).Forward(pool, &s, in, 1, want)
	res, err := sys.Root.RequestFuture(VersionPID(sys.Address(), id, v1), &ComputeRequest{Layer: 0, Expert: 0, Rows: 1, Dim: int32(w.Dim), Activations: AppendFloats(nil, in)}, 30*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*ComputeResponse)
	got := make([]float32, w.Dim)
	if err := DecodeFloats(got, r.Activations, int(r.Rows), int(r.Dim)); err != nil {
		t.Fatal(err, r.Error)
	}
	if !slices.Equal(got, want) {
		t.Error("a call to the first version computed other weights")
	}
}

// TestStopReleasesScratch: scratch a node grew computing a prefill-sized
// batch is released once its Host stops those experts (as it was when each
// expert owned its scratch), not kept by the shared list for good.
func TestStopReleasesScratch(t *testing.T) {
	_, w := testmodel.Load(t, testmodel.Config(t, "tiny", func(c *synth.Config) {
		c.Dim, c.FFN, c.Layers, c.Experts, c.TopK, c.Type = 512, 4096, 1, 8, 2, kernels.Q8_0
		c.Name = "scratch-release"
	}))
	pool := kernels.NewPool(2)
	defer pool.Close()
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	h := NewHost(sys, w, pool, nil)
	var ids []router.ExpertID
	for i := range w.Experts {
		ids = append(ids, router.ExpertID{Layer: 0, Index: i})
	}
	scratches.reset()
	base := liveHeap()
	if err := h.Sync(ids); err != nil {
		t.Fatal(err)
	}
	var es []*Expert
	var gs []*model.ExpertGroup
	const rows = 256
	for _, id := range ids {
		e, ok := h.Local(id)
		if !ok {
			t.Fatalf("%v not running", id)
		}
		es = append(es, e)
		gs = append(gs, &model.ExpertGroup{Expert: id.Index, Rows: make([]int32, rows), In: make([]float32, rows*w.Dim), Out: make([]float32, rows*w.Dim)})
	}
	var b Batch
	b.Forward(es, gs)
	es, gs = nil, nil
	grown := liveHeap() - base
	if grown < 32<<20 {
		t.Fatalf("the batch grew only %d MiB of scratch: nothing to release", grown>>20)
	}
	if err := h.Sync(nil); err != nil {
		t.Fatal(err)
	}
	if left := liveHeap() - base; left > grown/4 {
		t.Errorf("%d MiB of the %d MiB of scratch outlive the experts that grew it", left>>20, grown>>20)
	}
}

// liveHeap is the heap's live bytes after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
