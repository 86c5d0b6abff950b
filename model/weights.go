package model

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/gguf"
)

// Weights are a model's parameters, bound by GGUF tensor name. Matrices point
// into the mmapped file; nothing is copied.
type Weights struct {
	Config
	TokEmbd    kernels.Matrix // token_embd: Vocab rows of Dim
	OutputNorm []float32      // output_norm: Dim
	Output     kernels.Matrix // output (or token_embd when tied): Vocab rows of Dim
	Blocks     []Layer        // transformer blocks, Config.Layers of them

	file *gguf.File // the file Load bound the matrices to; nil for weights built otherwise
}

// Layer is one transformer block.
type Layer struct {
	AttnNorm []float32      // attn_norm: Dim
	Wq       kernels.Matrix // attn_q: QDim rows of Dim
	Wk       kernels.Matrix // attn_k: KVDim rows of Dim
	Wv       kernels.Matrix // attn_v: KVDim rows of Dim
	Wo       kernels.Matrix // attn_output: Dim rows of QDim
	FFNNorm  []float32      // ffn_norm: Dim
	GateInp  kernels.Matrix // ffn_gate_inp: Experts rows of Dim (MoE only)
	Experts  []Expert       // MoE experts, by index
	Dense    *Expert        // the FFN of a dense model
}

// Expert is one SwiGLU feed-forward network: down(silu(gate·x) ⊙ up·x).
type Expert struct {
	Gate kernels.Matrix // FFN rows of Dim
	Up   kernels.Matrix // FFN rows of Dim
	Down kernels.Matrix // Dim rows of FFN
}

// Bytes is the size of the expert's weights.
func (e *Expert) Bytes() int64 {
	return int64(len(e.Gate.Data) + len(e.Up.Data) + len(e.Down.Data))
}

// FeedForward returns the feed-forward network of layer l for expert index e (or the
// dense FFN when the model has no experts).
func (w *Weights) FeedForward(l, e int) *Expert {
	if w.Blocks[l].Dense != nil {
		return w.Blocks[l].Dense
	}
	return &w.Blocks[l].Experts[e]
}

// Params counts parameters in total and those used for one decoded token
// (attention, the routed top-k experts, gate, norms and the output
// projection; the embedding lookup reads one row and is not counted).
func (w *Weights) Params() (total, active int64) {
	el := func(m kernels.Matrix) int64 { return int64(m.Rows) * int64(m.Cols) }
	total = el(w.TokEmbd) + int64(len(w.OutputNorm))
	if !w.TiedOutput {
		total += el(w.Output)
	}
	active = el(w.Output) + int64(len(w.OutputNorm))
	for _, l := range w.Blocks {
		attn := el(l.Wq) + el(l.Wk) + el(l.Wv) + el(l.Wo) + int64(len(l.AttnNorm)+len(l.FFNNorm)) + el(l.GateInp)
		total += attn
		active += attn
		if l.Dense != nil {
			e := el(l.Dense.Gate) + el(l.Dense.Up) + el(l.Dense.Down)
			total += e
			active += e
			continue
		}
		for i, x := range l.Experts {
			e := el(x.Gate) + el(x.Up) + el(x.Down)
			total += e
			if i < w.TopK {
				active += e
			}
		}
	}
	return total, active
}

// BytesPerToken is the number of weight bytes streamed from memory for one
// decoded token: what Params counts as active, in stored bytes.
func (w *Weights) BytesPerToken() int64 {
	b := int64(len(w.Output.Data)) + 4*int64(len(w.OutputNorm))
	for _, l := range w.Blocks {
		b += int64(len(l.Wq.Data)+len(l.Wk.Data)+len(l.Wv.Data)+len(l.Wo.Data)+len(l.GateInp.Data)) + 4*int64(len(l.AttnNorm)+len(l.FFNNorm))
		if l.Dense != nil {
			b += l.Dense.Bytes()
			continue
		}
		for i := 0; i < w.TopK && i < len(l.Experts); i++ {
			b += l.Experts[i].Bytes()
		}
	}
	return b
}

// DenseBytes is the size of every weight that is not a routed expert's: the
// embedding, attention, norms, router gates and output (and a dense model's
// FFN). Every node of a cluster serving the model reads all of it, whatever
// experts it hosts. A tied output is counted once (though a node that
// computes it from packed tiles holds it twice: the embedding keeps its
// rows).
func (w *Weights) DenseBytes() int64 {
	b := int64(len(w.TokEmbd.Data)) + 4*int64(len(w.OutputNorm))
	if !w.TiedOutput {
		b += int64(len(w.Output.Data))
	}
	for _, l := range w.Blocks {
		b += int64(len(l.Wq.Data)+len(l.Wk.Data)+len(l.Wv.Data)+len(l.Wo.Data)+len(l.GateInp.Data)) + 4*int64(len(l.AttnNorm)+len(l.FFNNorm))
		if l.Dense != nil {
			b += l.Dense.Bytes()
		}
	}
	return b
}

// ExpertBytes is the size of all routed experts' weights (0 for a dense
// model).
func (w *Weights) ExpertBytes() int64 {
	var b int64
	for _, l := range w.Blocks {
		for i := range l.Experts {
			b += l.Experts[i].Bytes()
		}
	}
	return b
}

// afterPack, when set (tests), sees each matrix KeepResident has packed and
// released.
var afterPack func(kernels.Matrix)

// KeepResident makes what this process keeps in memory match what it
// computes with: the dense weights (DenseBytes) and the experts
// hosted(layer, index) reports.
//
// Where the CPU computes with packed tiles (kernels.TilesUseful), each such
// matrix gets them (built from the file, once, in the process's own memory)
// and the file pages under it are released, since MatMul reads the tiles:
// resident memory holds each weight once (a tied output twice, as the
// embedding keeps its rows), in the layout the kernels stream fastest.
// Experts no longer hosted drop their tiles first, and that memory is
// handed back to the OS before new tiles are built.
//
// The rest of the used weights are populated (read in now, so using them
// takes no page faults later), and the whole pages of every other expert
// are released (with huge pages turned off for the mapping, see
// gguf.File.SmallPages). A page fault maps the page cache's whole folio
// around the page (up to 2 MiB), so without the release a node using some
// experts would also hold parts of their neighbours; populating first means
// no later fault maps them again while the page cache keeps the file. It
// blocks while pages are read from disk. An expert used after all (the
// dispatcher's last resort) faults its pages back in. Weights not loaded
// from a mapped file only get their tiles.
func (w *Weights) KeepResident(hosted func(layer, expert int) bool) error {
	var release []kernels.Matrix
	// Drop the tiles of experts no longer hosted first, and hand their
	// memory back, so that a change of hosted set never holds old and new
	// tiles at once.
	dropped := false
	for li, l := range w.Blocks {
		for e, x := range l.Experts {
			if hosted(li, e) {
				continue
			}
			for _, m := range []kernels.Matrix{x.Gate, x.Up, x.Down} {
				if m.Tiles != nil && m.Tiles.Load() != nil {
					m.Tiles.Store(nil)
					dropped = true
				}
				release = append(release, m)
			}
		}
	}
	if dropped {
		debug.FreeOSMemory()
	}
	var pool *kernels.Pool // started when the first matrix needs packing
	defer func() {
		if pool != nil {
			pool.Close()
		}
	}()
	var errs []error
	small := false
	populate := []kernels.Matrix{w.TokEmbd}
	// keep packs m into the front of *buf where it is tiled, then releases
	// its file pages (or marks them to populate).
	keep := func(m kernels.Matrix, buf *[]byte) {
		packing := m.Tiles != nil && m.Tiles.Load() == nil
		if n := kernels.TilesLen(m); packing && n > 0 {
			m.Tiles.Store(kernels.PackTilesInto(pool, m, (*buf)[:n:n]))
			*buf = (*buf)[n:]
		}
		// The embedding reads rows of Data, so a tied output keeps them.
		if m.Tiles.Load() != nil && !(w.TiedOutput && m.Tiles == w.TokEmbd.Tiles) {
			release = append(release, m)
			// Packing read the matrix in; its pages go now, not after every
			// matrix is packed, so the process never holds the file and the
			// tiles at once (a peak of twice the model).
			if packing && w.file != nil {
				if !small {
					small = true
					if err := w.file.SmallPages(); err != nil {
						errs = append(errs, err)
					}
				}
				if err := w.file.Release(m.Data); err != nil {
					errs = append(errs, err)
				}
			}
			if afterPack != nil {
				afterPack(m)
			}
		} else {
			populate = append(populate, m)
		}
	}
	// use keeps a group of matrices (an expert's three, a layer's
	// attention) resident: packed tiles where MatMul uses them, in one
	// buffer for the group, so that more of them lie on whole huge pages
	// (kernels.AllocHuge) than each alone would.
	use := func(ms ...kernels.Matrix) {
		total := 0
		for _, m := range ms {
			if m.Tiles != nil && m.Tiles.Load() == nil {
				total += kernels.TilesLen(m)
			}
		}
		var buf []byte
		if total > 0 {
			if pool == nil {
				pool = kernels.NewPool(runtime.GOMAXPROCS(0))
			}
			buf = kernels.AllocHuge(total)
		}
		for _, m := range ms {
			keep(m, &buf)
		}
	}
	use(w.Output)
	for li, l := range w.Blocks {
		use(l.Wq, l.Wk, l.Wv, l.Wo, l.GateInp)
		if l.Dense != nil {
			use(l.Dense.Gate, l.Dense.Up, l.Dense.Down)
		}
		for e, x := range l.Experts {
			if hosted(li, e) {
				use(x.Gate, x.Up, x.Down)
			}
		}
	}
	if w.file == nil {
		return nil
	}
	// Errors so far (a release after packing) are reported at the end; the
	// rest of the work still runs, so one failed release does not leave the
	// unhosted experts resident and the used weights unpopulated.
	do := func(op func([]byte) error, ms []kernels.Matrix) {
		for _, m := range ms {
			if err := op(m.Data); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Base pages only, so a release can split a large folio; releasing
	// first drops huge-page mappings made before (which unmaps their used
	// parts too). Then populate what is used, which may map whole folios
	// again, and release the rest, page by page. A process that releases
	// nothing (every expert hosted, no tiles) keeps huge pages.
	if len(release) > 0 && !small {
		if err := w.file.SmallPages(); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	do(w.file.Release, release)
	do(w.file.Populate, populate)
	do(w.file.Release, release)
	return errors.Join(errs...)
}

// TensorTypes counts tensors by element type.
func (w *Weights) TensorTypes() map[string]int {
	m := map[string]int{}
	add := func(x kernels.Matrix) {
		if x.Data != nil {
			m[x.Type.String()]++
		}
	}
	add(w.TokEmbd)
	if !w.TiedOutput {
		add(w.Output)
	}
	for _, l := range w.Blocks {
		for _, x := range []kernels.Matrix{l.Wq, l.Wk, l.Wv, l.Wo, l.GateInp} {
			add(x)
		}
		ex := l.Experts
		if l.Dense != nil {
			ex = []Expert{*l.Dense}
		}
		for _, e := range ex {
			add(e.Gate)
			add(e.Up)
			add(e.Down)
		}
	}
	return m
}

func (w *Weights) String() string {
	return fmt.Sprintf("%s dim=%d layers=%d heads=%d/%d ffn=%d experts=%d top-%d vocab=%d ctx=%d",
		w.Arch, w.Dim, w.Layers, w.Heads, w.KVHeads, w.FFN, w.Experts, w.TopK, w.Vocab, w.Ctx)
}
