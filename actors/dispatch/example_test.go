package dispatch_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/sample"
	"github.com/conclave-ai/conclave/model/synth"
	"github.com/conclave-ai/conclave/router"
)

// Example runs a one-node "cluster": the map places every expert on node
// n0, a Host runs their actors, and a runner decodes through the
// dispatcher — the same tokens as in-process experts.
func Example() {
	dir, _ := os.MkdirTemp("", "dispatch-example")
	defer os.RemoveAll(dir)
	cfg, _ := synth.Preset("tiny")
	path := filepath.Join(dir, "tiny.gguf")
	if err := synth.Write(cfg, path); err != nil {
		log.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	w, err := model.Load(f)
	if err != nil {
		log.Fatal(err)
	}
	pool := kernels.NewPool(2)
	defer pool.Close()

	// The cluster map: one active node hosting every expert, ready.
	fsm := router.NewFSM()
	cmds := []router.Command{
		{Op: router.OpUpsertNode, Node: &router.Node{ID: "n0", State: router.NodeActive}},
		{Op: router.OpSetModel, Model: &router.Model{ID: "tiny", Digest: "00", Version: 1, Layers: w.Layers, Experts: w.Experts, TopK: w.TopK, Live: true}},
	}
	var place []router.PlacementEntry
	for l := 0; l < w.Layers; l++ {
		for e := 0; e < w.Experts; e++ {
			place = append(place, router.PlacementEntry{Expert: router.ExpertID{Layer: l, Index: e}, Replicas: []router.Replica{{Node: "n0", Device: "cpu", Ready: true}}})
		}
	}
	cmds = append(cmds, router.Command{Op: router.OpSetPlacement, Placement: place})
	for _, c := range cmds {
		c.V = router.CommandVersion
		if err := fsm.ApplyCommand(c); err != nil {
			log.Fatal(err)
		}
	}

	sys := newSystem()
	defer sys.Shutdown()
	host := expert.NewHost(sys, w, pool, func() uint64 { return fsm.Map().Epoch })
	defer host.Close()
	if err := host.Sync(fsm.Map().ExpertsOn("n0")); err != nil {
		log.Fatal(err)
	}
	dc := dispatch.DefaultConfig()
	dc.Self = "n0"
	d, err := dispatch.New(dc, sys, fsm.Map, host, nil)
	if err != nil {
		log.Fatal(err)
	}

	decode := func(experts model.ExpertRunner) []int32 {
		r := model.NewRunner(w, pool, 16)
		cache, _ := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: 64, KVDim: w.KVDim(), Type: kernels.F16})
		greedy, _ := sample.New(sample.DefaultConfig(), w.Vocab)
		out, _, err := r.Generate(context.Background(), cache, []int32{1, 300, 301, 302}, 8, greedy, nil, nil, experts)
		if err != nil {
			log.Fatal(err)
		}
		return out
	}
	same := slices.Equal(decode(d), decode(nil))
	fmt.Printf("%d experts hosted, same tokens: %v, %d local calls\n", len(host.Hosted()), same, d.Stats().Local)
	// Output:
	// 8 experts hosted, same tokens: true, 35 local calls
}
