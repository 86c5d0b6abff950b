package cluster

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/router"
)

// ByteRange is [Off, Off+Len) of a file.
type ByteRange struct {
	Off, Len int64
}

// ModelLayout says which bytes of a GGUF file each part of the model needs:
// everything but the experts (header, metadata, tensor directory, attention,
// norms, embeddings, the router gate) is Dense; each expert's slices of the
// merged ffn_{gate,up,down}_exps tensors (or its own legacy tensors) are
// its ranges in Experts.
type ModelLayout struct {
	Dense   []ByteRange
	Experts map[router.ExpertID][]ByteRange
}

var (
	mergedExpertTensor = regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$`)
	legacyExpertTensor = regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight$`)
)

// LayoutOf computes f's layout from its tensor directory alone (no tensor
// data is read), so it works on a file whose tensors are not fetched yet.
func LayoutOf(f *gguf.File) (ModelLayout, error) {
	lay := ModelLayout{Dense: []ByteRange{{0, int64(f.DataOffset)}}, Experts: map[router.ExpertID][]ByteRange{}}
	for _, ti := range f.Tensors {
		off, size := int64(f.DataOffset+ti.Offset), int64(ti.Size())
		if m := mergedExpertTensor.FindStringSubmatch(ti.Name); m != nil {
			layer, _ := strconv.Atoi(m[1])
			if len(ti.Dims) < 2 {
				return lay, fmt.Errorf("cluster: %s: tensor %s: %d dims, want 3", f.Path, ti.Name, len(ti.Dims))
			}
			// The expert index is the outermost dimension: expert e's
			// matrix is the e-th of n equal, contiguous slices.
			n := int64(ti.Dims[len(ti.Dims)-1])
			if n <= 0 || size%n != 0 {
				return lay, fmt.Errorf("cluster: %s: tensor %s: %d bytes do not split into %d experts", f.Path, ti.Name, size, n)
			}
			per := size / n
			for e := range n {
				id := router.ExpertID{Layer: layer, Index: int(e)}
				lay.Experts[id] = append(lay.Experts[id], ByteRange{off + e*per, per})
			}
			continue
		}
		if m := legacyExpertTensor.FindStringSubmatch(ti.Name); m != nil {
			layer, _ := strconv.Atoi(m[1])
			e, _ := strconv.Atoi(m[3])
			id := router.ExpertID{Layer: layer, Index: e}
			lay.Experts[id] = append(lay.Experts[id], ByteRange{off, size})
			continue
		}
		lay.Dense = append(lay.Dense, ByteRange{off, size})
	}
	return lay, nil
}

// chunksOf returns the sorted, distinct chunks of man covering ranges.
func chunksOf(man *Manifest, ranges []ByteRange) []int {
	var out []int
	for _, r := range ranges {
		first, end := man.ChunksCovering(r.Off, r.Len)
		for i := first; i < end; i++ {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
