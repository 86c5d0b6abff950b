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

// AccountServing takes a model this node fetched (it started without one)
// into its memory budget: with a memory limit (and no explicit capacity),
// its expert capacity becomes limit − dense − serving − reserve, as for a
// node started with the file, and is gossiped so that placement gives it no
// more experts than fit. It returns the capacity, or an error wrapping
// ErrMemoryLimit when the model leaves no room; without a memory limit it
// changes nothing.
func (n *Node) AccountServing(dense, serving int64) (int64, error) {
	if n.cfg.CapacityBytes > 0 || n.cfg.MemoryLimitBytes <= 0 {
		return n.meta.get().Capacity, nil
	}
	b := MemoryBudget{Limit: n.cfg.MemoryLimitBytes, Dense: dense, Serving: serving, Reserve: n.cfg.RuntimeReserveBytes}
	capacity, err := b.ExpertCapacity()
	if err != nil {
		return 0, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	if capacity != n.meta.get().Capacity {
		n.log.Info("expert capacity from the memory limit, with the fetched model", "limit", b.Limit, "dense", b.Dense,
			"kv_cache_and_step", b.Serving, "runtime_reserve", b.Reserve, "expert_capacity", capacity)
		n.updateMeta(func(m *NodeMeta) { m.Capacity = capacity })
	}
	return capacity, nil
}
