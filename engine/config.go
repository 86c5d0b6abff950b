package engine

import (
	"errors"
	"fmt"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/kvcache"
)

// ErrInvalidConfig is wrapped by Config.Validate's errors.
var ErrInvalidConfig = errors.New("engine: invalid config")

// ErrSlowConsumer ends a generation whose reader let its event buffer fill:
// the scheduler never waits for a reader (the final event has FinishCancel).
var ErrSlowConsumer = errors.New("engine: event reader too slow")

// Config sizes the scheduler and the KV cache.
type Config struct {
	// MaxBatchTokens is the most rows (tokens) in one forward pass: every
	// running sequence's decode token plus prefill chunks. ≥ MaxRunning.
	MaxBatchTokens int
	// MaxRunning is the most sequences admitted (holding KV blocks) at once.
	MaxRunning int
	// MaxQueue is the most requests waiting for admission; Submit returns
	// ErrOverloaded beyond it.
	MaxQueue int
	// PrefillChunk is the most prompt tokens one sequence gets in one step,
	// so a long prompt shares steps with others' decoding. 0 means
	// MaxBatchTokens.
	PrefillChunk int
	// BlockSize is KV positions per block (the prefix-cache granularity).
	BlockSize int
	// KVBlocks is the number of KV blocks allocated at New. 0 derives it
	// from KVBytes.
	KVBlocks int
	// KVBytes is the KV cache memory budget in bytes, used when KVBlocks is 0.
	KVBytes int64
	// KVType is the element type of keys and values: kernels.F16 or F32.
	KVType kernels.DType
	// Ctx is the most positions per sequence (prompt + generated); 0 means
	// the model's context length. The KV pool must hold at least one
	// sequence of Ctx positions.
	Ctx int
	// AdmitHeadroom is the number of blocks that must remain available,
	// beyond a prompt's own, for a waiting request to be admitted: room for
	// running sequences to keep decoding without preemption.
	AdmitHeadroom int
	// EventBuffer caps the events buffered per request (the buffer is
	// min(MaxTokens, EventBuffer) + 1). A reader that lets it fill is
	// cancelled with ErrSlowConsumer rather than block the scheduler.
	EventBuffer int
}

// DefaultConfig returns a configuration for one node serving a few dozen
// streams: 1024-token steps, 64 running sequences, 1 GiB of F16 KV cache in
// blocks of 16 positions.
//
// A burst of sixteen 36-token prompts (576 rows) fits one 1024-row step.
// With 512 it took two, the second a few dozen rows that still stream every
// expert's weights: on the bench preset the burst's TTFT p50 was 335–370 ms
// against 350–445, and the sixteen streams' throughput 6 % higher, while a
// sustained load (prompts arriving as others finish) ran the same. A long
// prompt still goes PrefillChunk tokens a step.
func DefaultConfig() Config {
	return Config{
		MaxBatchTokens: 1024,
		MaxRunning:     64,
		MaxQueue:       256,
		PrefillChunk:   256,
		BlockSize:      16,
		KVBytes:        1 << 30,
		KVType:         kernels.F16,
		AdmitHeadroom:  4,
		EventBuffer:    1024,
	}
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.MaxRunning < 1:
		return fmt.Errorf("%w: MaxRunning %d < 1", ErrInvalidConfig, c.MaxRunning)
	case c.MaxBatchTokens < c.MaxRunning:
		return fmt.Errorf("%w: MaxBatchTokens %d < MaxRunning %d (every running sequence decodes each step)", ErrInvalidConfig, c.MaxBatchTokens, c.MaxRunning)
	case c.MaxQueue < 1:
		return fmt.Errorf("%w: MaxQueue %d < 1", ErrInvalidConfig, c.MaxQueue)
	case c.PrefillChunk < 0:
		return fmt.Errorf("%w: PrefillChunk %d < 0", ErrInvalidConfig, c.PrefillChunk)
	case c.BlockSize < 1:
		return fmt.Errorf("%w: BlockSize %d < 1", ErrInvalidConfig, c.BlockSize)
	case c.KVBlocks < 0 || (c.KVBlocks == 0 && c.KVBytes <= 0):
		return fmt.Errorf("%w: KVBlocks %d / KVBytes %d: one must be positive", ErrInvalidConfig, c.KVBlocks, c.KVBytes)
	case c.KVType != kernels.F16 && c.KVType != kernels.F32:
		return fmt.Errorf("%w: KVType %v (want F16 or F32)", ErrInvalidConfig, c.KVType)
	case c.Ctx < 0:
		return fmt.Errorf("%w: Ctx %d < 0", ErrInvalidConfig, c.Ctx)
	case c.AdmitHeadroom < 0:
		return fmt.Errorf("%w: AdmitHeadroom %d < 0", ErrInvalidConfig, c.AdmitHeadroom)
	case c.EventBuffer < 1:
		return fmt.Errorf("%w: EventBuffer %d < 1", ErrInvalidConfig, c.EventBuffer)
	}
	return nil
}

func (c Config) prefillChunk() int {
	if c.PrefillChunk == 0 {
		return c.MaxBatchTokens
	}
	return min(c.PrefillChunk, c.MaxBatchTokens)
}

// ContextLen is the most positions per sequence an engine for w allows:
// Ctx, at most the model's context; the model's when Ctx is 0.
func (c Config) ContextLen(w *model.Weights) int {
	if c.Ctx > 0 {
		return min(c.Ctx, w.Ctx)
	}
	return w.Ctx
}

// SequenceKVBytes is the KV memory one sequence of ContextLen positions
// takes for w, in whole blocks: the least KV pool New accepts.
func (c Config) SequenceKVBytes(w *model.Weights) int64 {
	blocks := (c.ContextLen(w) + c.BlockSize - 1) / c.BlockSize
	return int64(blocks) * kvcache.BlockBytes(w.Layers, w.KVDim(), c.BlockSize, c.KVType)
}

// AutoKVCap bounds the KV pool AutoKVBytes sizes, unless one sequence
// needs more.
const AutoKVCap = 512 << 20

// AutoKVBytes is a KV pool size that fits w: room for MaxRunning
// sequences of ContextLen positions, at most AutoKVCap, and at least one
// sequence. A small model gets no more than its sequences can use (the
// rest would be resident for nothing: the engine writes every block at
// warm-up), and a model whose full context needs more than the cap (32k
// positions of an 8×7B Mixtral take 4 GiB) still starts.
func (c Config) AutoKVBytes(w *model.Weights) int64 {
	one := c.SequenceKVBytes(w)
	all := int64(c.MaxRunning) * one
	return max(one, min(all, AutoKVCap))
}

// kvBlocks is the number of KV blocks New allocates for w.
func (c Config) kvBlocks(w *model.Weights) int {
	if c.KVBlocks > 0 {
		return c.KVBlocks
	}
	return int(c.KVBytes / kvcache.BlockBytes(w.Layers, w.KVDim(), c.BlockSize, c.KVType))
}

// KVPoolBytes is the size in bytes of the KV block pool New allocates for
// w (KVBlocks, or as many blocks as fit in KVBytes): the engine's memory
// besides the model's weights and its per-step buffers.
func (c Config) KVPoolBytes(w *model.Weights) int64 {
	return int64(c.kvBlocks(w)) * kvcache.BlockBytes(w.Layers, w.KVDim(), c.BlockSize, c.KVType)
}

// StepBytes estimates the memory of the buffers one full step (MaxBatchTokens
// rows) fills for w on a pool of threads threads, besides the KV pool: the
// model's activations and scratch (model.StepBytes, as if every expert
// computed here) and the logits of MaxRunning sequences. Warm fills most
// of them at start; a node counts them against its memory limit.
func (c Config) StepBytes(w *model.Weights, threads int) int64 {
	return model.StepBytes(w.Config, c.MaxBatchTokens, threads, c.ContextLen(w)) + int64(c.MaxRunning)*int64(w.Vocab)*4
}
