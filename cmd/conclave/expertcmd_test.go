package main

import (
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

// patchExpert writes a copy of the model at base whose expert (layer,
// index) has the weights of the same expert in donor: the single-node
// reference for a cluster that hot-updated that expert from donor.
func patchExpert(t *testing.T, base, donor string, layer, index int) string {
	t.Helper()
	bf, err := gguf.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	df, err := gguf.Open(donor)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	gw := gguf.NewWriter(bf.Version)
	for _, kv := range bf.KVs {
		if err := gw.AddKV(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	patched := 0
	for _, ti := range bf.Tensors {
		_, data, err := bf.Tensor(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"gate", "up", "down"} {
			if ti.Name != fmt.Sprintf("blk.%d.ffn_%s_exps.weight", layer, kind) {
				continue
			}
			_, dd, err := df.Tensor(ti.Name)
			if err != nil || len(dd) != len(data) {
				t.Fatalf("donor tensor %s: %v", ti.Name, err)
			}
			n := uint64(len(data)) / ti.Dims[2] // one expert's bytes
			data = bytes.Clone(data)
			copy(data[uint64(index)*n:uint64(index+1)*n], dd[uint64(index)*n:])
			patched++
		}
		if err := gw.AddTensor(ti.Name, ti.Type, ti.Dims, data); err != nil {
			t.Fatal(err)
		}
	}
	if patched != 3 {
		t.Fatalf("patched %d tensors, want 3 (merged expert tensors)", patched)
	}
	out := filepath.Join(t.TempDir(), "patched.gguf")
	if err := gw.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExpertUpdateCLI: two serving node processes (replication 2) serve the
// tiny model; `conclave expert update` replaces expert 0 of layer 0 with
// another model's, after which completions equal `conclave generate` on a
// model file patched the same way; `conclave expert rollback` restores the
// original output.
func TestExpertUpdateCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs 2 serving processes")
	}
	v1 := testmodel.Write(t, testmodel.Config(t, "tiny", nil))
	v2 := testmodel.Write(t, testmodel.Config(t, "tiny", func(c *synth.Config) { c.Seed = 7 }))
	patched := patchExpert(t, v1, v2, 0, 0)
	const prompt = "the quick brown fox jumps over the lazy dog"
	gen := func(path string) string {
		return generate(t, "--model", path, "--prompt", prompt, "--max-tokens", "24", "--ignore-eos").Text
	}
	want1, wantPatched := gen(v1), gen(patched)
	if want1 == wantPatched {
		t.Fatal("the patched expert does not change the reference output")
	}

	pc := startProcCluster(t, 2, "--model", v1, "--replication", "2", "--threads", "1")
	client := &http.Client{Timeout: time.Minute}
	waitAllReady(t, client, pc)
	model := servedModel(t, client, pc.addrs[0][0])
	complete := func() string { return completeGreedy(t, client, pc.addrs[0][0], model, prompt, 24) }
	if got := complete(); got != want1 {
		t.Fatalf("before the update: %q, want %q", got, want1)
	}

	// Update through n1's admin API: n1 stores the file, n0 fetches it.
	out := mustCLI(t, "expert", "update", "--layer", "0", "--expert", "0", "--from", v2, "--addr", pc.addrs[1][0])
	t.Logf("conclave expert update: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "2 replicas loaded it") {
		t.Fatalf("update output %q", out)
	}
	if got := complete(); got != wantPatched {
		t.Fatalf("after the update: %q, want the patched model's %q", got, wantPatched)
	}
	out = mustCLI(t, "cluster", "experts", "--addr", pc.addrs[0][0])
	if !strings.Contains(out, "(prev base)") {
		t.Fatalf("cluster experts shows no version:\n%s", out)
	}
	out = mustCLI(t, "expert", "rollback", "--layer", "0", "--expert", "0", "--addr", pc.addrs[0][0])
	t.Logf("conclave expert rollback: %s", strings.TrimSpace(out))
	if got := complete(); got != want1 {
		t.Fatalf("after the rollback: %q, want %q", got, want1)
	}
	// Bad input gets a usage error, not a request.
	if _, errOut, code := cli(t, "expert", "update", "--layer", "0", "--expert", "0"); code != 2 || !strings.Contains(errOut, "--from") {
		t.Fatalf("update without --from: code %d %q", code, errOut)
	}
	if _, errOut, code := cli(t, "expert", "update", "--layer", "9", "--expert", "0", "--from", v2, "--addr", pc.addrs[0][0]); code != 1 || !strings.Contains(errOut, "no expert") {
		t.Fatalf("update of an expert outside the model: code %d %q", code, errOut)
	}
}
