package cluster

import "fmt"

// MemoryBudget is how a node's memory limit is split. Everything a node
// keeps resident is its dense weights (read for every token), its engine's
// serving memory (the KV cache and a full step's buffers), the process itself (runtime reserve) and
// the experts placed on it; the first three are fixed, so the rest of the
// limit is the expert capacity the node gossips and placement respects.
type MemoryBudget struct {
	Limit   int64 // bytes the node may keep resident
	Dense   int64 // bytes of the model's non-expert weights (model.Weights.DenseBytes)
	Serving int64 // bytes of the engine's KV cache and step buffers
	Reserve int64 // bytes for the process: runtime, heap, binary, buffers
}

// ExpertCapacity returns the bytes of expert weights the node may host,
// Limit − Dense − Serving − Reserve, or an error wrapping ErrMemoryLimit
// that names the numbers when nothing is left.
func (b MemoryBudget) ExpertCapacity() (int64, error) {
	c := b.Limit - b.Dense - b.Serving - b.Reserve
	if c <= 0 {
		return 0, fmt.Errorf("%w: limit %s − dense weights %s − KV cache and step buffers %s − runtime reserve %s = %s",
			ErrMemoryLimit, mib(b.Limit), mib(b.Dense), mib(b.Serving), mib(b.Reserve), mib(c))
	}
	return c, nil
}

// mib formats bytes as MiB with one decimal, exact bytes alongside.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB (%d B)", float64(b)/(1<<20), b) }
