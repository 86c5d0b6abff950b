package sample

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalidConfig is wrapped by every error returned from [Config.Validate]
// and [New] for a setting out of range.
var ErrInvalidConfig = errors.New("sample: invalid config")

// DefaultRepeatLastN is the repetition-penalty window, in tokens, used when
// RepeatPenalty is set and RepeatLastN is 0.
const DefaultRepeatLastN = 64

// MaxTemperature is the largest accepted Temperature. Beyond it the
// distribution is uniform to within float32 precision for any realistic
// logits, so larger values are more likely a unit mistake than intent.
const MaxTemperature = 100

// Config is a sampling configuration. The zero value is greedy decoding with
// no penalties, the same as [DefaultConfig].
type Config struct {
	// Temperature divides the logits before the softmax; dimensionless, in
	// [0, MaxTemperature]. 0 means greedy: argmax, ties go to the lowest id,
	// and TopK, TopP and MinP are ignored.
	Temperature float32

	// TopK keeps the K highest logits (ties go to the lower id); >= 0.
	// 0, or a value >= the vocabulary size, is off.
	TopK int

	// TopP keeps the smallest prefix of candidates, by descending
	// probability, whose cumulative probability reaches TopP; in [0, 1].
	// 0 and 1 are off. At least one candidate is always kept.
	TopP float32

	// MinP keeps the candidates whose probability is at least MinP times the
	// probability of the most likely candidate; in [0, 1]. 0 is off.
	MinP float32

	// RepeatPenalty is the llama.cpp repetition penalty, a ratio >= 0: each
	// distinct token among the last RepeatLastN tokens of the history has a
	// positive logit divided by it and a non-positive logit multiplied by it.
	// 0 and 1 are off; values below 1 favour repetition.
	RepeatPenalty float32

	// RepeatLastN is the RepeatPenalty window in tokens. 0 means
	// DefaultRepeatLastN, -1 means the whole history; other negative values
	// are invalid.
	RepeatLastN int

	// PresencePenalty is subtracted, in logit units, from every token that
	// occurs among the generated tokens, the history after its first
	// PromptLen (OpenAI semantics: the prompt does not count). Must be
	// finite; 0 is off; negative values favour repetition.
	PresencePenalty float32

	// FrequencyPenalty is subtracted, in logit units, once per occurrence of
	// a token among the generated tokens (OpenAI semantics). Must be finite;
	// 0 is off; negative values favour repetition.
	FrequencyPenalty float32

	// PromptLen is how many tokens at the start of the history are the
	// prompt: the repetition penalty's window covers them (llama.cpp,
	// vLLM), the presence and frequency penalties count only the tokens
	// after them. ≥ 0.
	PromptLen int

	// Seed seeds the PCG generator that makes the one uniform draw per
	// sampled token. Equal seeds and equal inputs give equal tokens.
	Seed uint64

	// Skip is how many draws of Seed's stream were already consumed, by
	// tokens sampled before this Sampler took over (a generation another
	// node began and this one continues from its tokens): the Sampler
	// starts Skip draws in, so the continuation samples the tokens the
	// uninterrupted generation would have. ≥ 0; greedy sampling draws
	// nothing, so it ignores Skip.
	Skip int
}

// DefaultConfig returns greedy decoding without penalties.
func DefaultConfig() Config {
	return Config{}
}

// Validate reports the first out-of-range field. Every returned error wraps
// [ErrInvalidConfig].
func (c Config) Validate() error {
	switch {
	case !(c.Temperature >= 0 && c.Temperature <= MaxTemperature):
		return fmt.Errorf("%w: Temperature %v not in [0, %d]", ErrInvalidConfig, c.Temperature, MaxTemperature)
	case c.TopK < 0:
		return fmt.Errorf("%w: TopK %d is negative", ErrInvalidConfig, c.TopK)
	case !(c.TopP >= 0 && c.TopP <= 1):
		return fmt.Errorf("%w: TopP %v not in [0, 1]", ErrInvalidConfig, c.TopP)
	case !(c.MinP >= 0 && c.MinP <= 1):
		return fmt.Errorf("%w: MinP %v not in [0, 1]", ErrInvalidConfig, c.MinP)
	case !finite(c.RepeatPenalty) || c.RepeatPenalty < 0:
		return fmt.Errorf("%w: RepeatPenalty %v must be finite and >= 0", ErrInvalidConfig, c.RepeatPenalty)
	case c.RepeatLastN < -1:
		return fmt.Errorf("%w: RepeatLastN %d is below -1", ErrInvalidConfig, c.RepeatLastN)
	case !finite(c.PresencePenalty):
		return fmt.Errorf("%w: PresencePenalty %v is not finite", ErrInvalidConfig, c.PresencePenalty)
	case !finite(c.FrequencyPenalty):
		return fmt.Errorf("%w: FrequencyPenalty %v is not finite", ErrInvalidConfig, c.FrequencyPenalty)
	case c.Skip < 0:
		return fmt.Errorf("%w: Skip %d is negative", ErrInvalidConfig, c.Skip)
	case c.PromptLen < 0:
		return fmt.Errorf("%w: PromptLen %d is negative", ErrInvalidConfig, c.PromptLen)
	}
	return nil
}

func finite(f float32) bool {
	return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0)
}

// Enabled-ness helpers keep the "0 or 1 means off" rules in one place.

func (c Config) greedy() bool         { return c.Temperature == 0 }
func (c Config) topP() bool           { return c.TopP > 0 && c.TopP < 1 }
func (c Config) minP() bool           { return c.MinP > 0 }
func (c Config) repeatPenalty() bool  { return c.RepeatPenalty != 0 && c.RepeatPenalty != 1 }
func (c Config) presenceOrFreq() bool { return c.PresencePenalty != 0 || c.FrequencyPenalty != 0 }
