package dispatch_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/sample"
	"github.com/conclave-ai/conclave/router"
)

// loadModel synthesizes preset into a temp dir and binds it.
func loadModel(t testing.TB, preset string) *model.Weights {
	t.Helper()
	_, w := testmodel.Load(t, testmodel.Config(t, preset, nil))
	return w
}

// testNode is one simulated node: an actor system with remote on a loopback
// port, its expert actors and its dispatcher, all reading one shared map.
type testNode struct {
	id   string
	addr string
	sys  *actor.ActorSystem
	rem  *remote.Remote
	host *expert.Host
	disp *dispatch.Dispatcher
	once sync.Once
}

func (n *testNode) kill() {
	n.once.Do(func() {
		if n.rem != nil {
			n.rem.Shutdown(false)
		}
		n.sys.Shutdown()
	})
}

type testNet struct {
	t     testing.TB
	w     *model.Weights
	pool  *kernels.Pool
	fsm   *router.FSM
	nodes []*testNode
}

type netOptions struct {
	replication int
	dc          dispatch.Config
	noFallback  bool
	skipHost    map[string]bool // nodes whose expert actors the test provides itself
	// ownPools gives every node other than n0 its own 2-thread kernel pool,
	// as separate processes have (n0's is tn.pool); by default all nodes
	// share one, so their experts never compute at the same time.
	ownPools bool
}

// newSystem returns an actor system that logs nothing (protoactor's info
// logs would drown the test output).
func newSystem() *actor.ActorSystem {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func apply(t testing.TB, f *router.FSM, c router.Command) {
	t.Helper()
	c.V = router.CommandVersion
	if err := f.ApplyCommand(c); err != nil {
		t.Fatalf("%s: %v", c.Op, err)
	}
}

// newNet starts n nodes on loopback (node i is "n<i>"), places the model's
// experts with router.Place and starts every replica's actor, ready.
func newNet(t testing.TB, w *model.Weights, n int, o netOptions) *testNet {
	t.Helper()
	pool := kernels.NewPool(2)
	t.Cleanup(pool.Close)
	tn := &testNet{t: t, w: w, pool: pool, fsm: router.NewFSM()}
	if o.dc.Timeout == 0 {
		o.dc = dispatch.DefaultConfig()
	}
	for i := 0; i < n; i++ {
		nd := &testNode{id: fmt.Sprintf("n%d", i), sys: newSystem()}
		if n > 1 {
			nd.addr = freeAddr(t)
			host, port, _ := net.SplitHostPort(nd.addr)
			p, _ := strconv.Atoi(port)
			nd.rem = remote.NewRemote(nd.sys, remote.Configure(host, p, expert.RemoteOptions(nil, nil)...))
			nd.rem.Start()
		} else {
			nd.addr = nd.sys.Address()
		}
		t.Cleanup(nd.kill)
		epoch := func() uint64 { return tn.fsm.Map().Epoch }
		npool := pool
		if o.ownPools && i > 0 {
			npool = kernels.NewPool(2)
			t.Cleanup(npool.Close)
		}
		nd.host = expert.NewHost(nd.sys, w, npool, epoch)
		dc := o.dc
		dc.Self = nd.id
		var fb *dispatch.Fallback
		if !o.noFallback {
			fb = &dispatch.Fallback{W: w, Pool: npool}
		}
		d, err := dispatch.New(dc, nd.sys, tn.fsm.Map, nd.host, fb)
		if err != nil {
			t.Fatal(err)
		}
		nd.disp = d
		tn.nodes = append(tn.nodes, nd)
		apply(t, tn.fsm, router.Command{Op: router.OpUpsertNode, Node: &router.Node{ID: nd.id, ActorAddr: nd.addr, State: router.NodeActive,
			Devices: []router.Device{{Name: "cpu", MemBytes: 1 << 30, FreeBytes: 1 << 30}}, Capacity: 1 << 30}})
	}
	apply(t, tn.fsm, router.Command{Op: router.OpSetReplication, Replication: max(o.replication, 1)})
	apply(t, tn.fsm, router.Command{Op: router.OpSetModel, Model: &router.Model{ID: "tiny", Digest: "00", Version: 1, Arch: w.Arch,
		Layers: w.Layers, Experts: w.Experts, TopK: w.TopK, ExpertBytes: w.FeedForward(0, 0).Bytes(), Live: true}})
	res, err := router.Place(tn.fsm.Map().PlaceInput(nil))
	if err != nil {
		t.Fatal(err)
	}
	apply(t, tn.fsm, router.Command{Op: router.OpSetPlacement, Placement: router.PlacementEntries(res.Placement)})
	for _, nd := range tn.nodes {
		ids := tn.fsm.Map().ExpertsOn(nd.id)
		if o.skipHost[nd.id] {
			continue
		}
		if err := nd.host.Sync(ids); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			apply(t, tn.fsm, router.Command{Op: router.OpSetReplicaReady, Expert: &id, NodeID: nd.id, Ready: true})
		}
	}
	return tn
}

// markReady marks every replica placed on node ready (for actors a test
// spawns itself).
func (tn *testNet) markReady(node string) {
	for _, id := range tn.fsm.Map().ExpertsOn(node) {
		apply(tn.t, tn.fsm, router.Command{Op: router.OpSetReplicaReady, Expert: &id, NodeID: node, Ready: true})
	}
}

var prompts = [][]int32{
	{1, 300, 301, 302},
	{1, 17, 42, 99, 100, 7, 8, 9, 250, 251, 260},
	{1, 5},
	{1, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418},
}

const genTokens = 12

// reference decodes each prompt greedily with a plain runner and in-process
// experts.
func reference(t testing.TB, w *model.Weights) [][]int32 {
	t.Helper()
	pool := kernels.NewPool(2)
	defer pool.Close()
	var out [][]int32
	for _, p := range prompts {
		out = append(out, generate(t, w, pool, p, nil))
	}
	return out
}

func generate(t testing.TB, w *model.Weights, pool *kernels.Pool, prompt []int32, experts model.ExpertRunner) []int32 {
	t.Helper()
	r := model.NewRunner(w, pool, 32)
	cache, err := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: 128, KVDim: w.KVDim(), Type: kernels.F16})
	if err != nil {
		t.Fatal(err)
	}
	greedy, err := sample.New(sample.DefaultConfig(), w.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	toks, _, err := r.Generate(context.Background(), cache, prompt, genTokens, greedy, nil, nil, experts)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

// engineTokens runs every prompt at once (batched) through an engine whose
// experts go through r.
func engineTokens(t testing.TB, w *model.Weights, r model.ExpertRunner) [][]int32 {
	t.Helper()
	pool := kernels.NewPool(2)
	defer pool.Close()
	cfg := engine.DefaultConfig()
	cfg.KVBytes = 16 << 20
	e, err := engine.New(cfg, w, pool, nil, engine.WithExperts(r))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var chans []<-chan engine.Event
	for _, p := range prompts {
		ch, err := e.Submit(ctx, engine.Request{Prompt: p, MaxTokens: genTokens})
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	out := make([][]int32, len(chans))
	for i, ch := range chans {
		for ev := range ch {
			if ev.Err != nil {
				t.Fatalf("prompt %d: %v", i, ev.Err)
			}
			if ev.HasToken {
				out[i] = append(out[i], ev.Token)
			}
		}
	}
	return out
}
