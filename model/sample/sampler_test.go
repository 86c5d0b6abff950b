package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/conclave-ai/conclave/kernels"
)

func mustNew(t testing.TB, c Config, vocab int) *Sampler {
	t.Helper()
	s, err := New(c, vocab)
	if err != nil {
		t.Fatalf("New(%+v, %d): %v", c, vocab, err)
	}
	return s
}

// logProbs returns log(p) for each p, so a temperature-1 softmax recovers p.
func logProbs(p ...float64) []float32 {
	out := make([]float32, len(p))
	for i, x := range p {
		out[i] = float32(math.Log(x))
	}
	return out
}

// randomLogits returns reproducible logits in [-10, 10).
func randomLogits(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.Float64()*20 - 10)
	}
	return out
}

// frequencies samples draws tokens with a fresh copy of logits each time.
func frequencies(t *testing.T, s *Sampler, logits []float32, draws int) []float64 {
	t.Helper()
	counts := make([]float64, len(logits))
	buf := make([]float32, len(logits))
	for range draws {
		copy(buf, logits)
		counts[s.Sample(buf, nil)]++
	}
	for i := range counts {
		counts[i] /= float64(draws)
	}
	return counts
}

func TestGreedy(t *testing.T) {
	tests := []struct {
		name   string
		logits []float32
		want   int32
	}{
		{"single", []float32{0.3}, 0},
		{"argmax last", []float32{1, 2, 3}, 2},
		{"argmax middle", []float32{-1, 5, 4.9}, 1},
		{"all negative", []float32{-3, -2, -7}, 1},
		{"tie picks lowest id", []float32{1, 7, 3, 7, 7}, 1},
		{"all equal", []float32{2, 2, 2}, 0},
		{"masked -Inf", []float32{float32(math.Inf(-1)), -100, float32(math.Inf(-1))}, 1},
		{"NaN skipped", []float32{1, float32(math.NaN()), 2}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustNew(t, DefaultConfig(), len(tt.logits))
			if got := s.Sample(slices.Clone(tt.logits), nil); got != tt.want {
				t.Errorf("Sample = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTopKOneIsGreedy(t *testing.T) {
	const vocab = 1000
	logits := randomLogits(7, vocab)
	logits[123], logits[456] = 50, 50 // a tie at the top: lower id must win
	greedy := mustNew(t, DefaultConfig(), vocab)
	want := greedy.Sample(slices.Clone(logits), nil)
	if want != 123 {
		t.Fatalf("greedy = %d, want 123", want)
	}
	for _, temp := range []float32{0.01, 0.5, 1, 2, 100} {
		t.Run(fmt.Sprintf("temperature %v", temp), func(t *testing.T) {
			s := mustNew(t, Config{Temperature: temp, TopK: 1, Seed: 3}, vocab)
			for range 50 {
				if got := s.Sample(slices.Clone(logits), nil); got != want {
					t.Fatalf("temperature %v: Sample = %d, want greedy %d", temp, got, want)
				}
			}
		})
	}
}

func TestSeedDeterminism(t *testing.T) {
	const vocab, draws = 500, 100
	logits := randomLogits(11, vocab)
	configs := []struct {
		name string
		cfg  Config
	}{
		{"plain", Config{Temperature: 1.5}},
		{"top-k", Config{Temperature: 1, TopK: 40}},
		{"top-p", Config{Temperature: 1.2, TopP: 0.95}},
		{"min-p", Config{Temperature: 1.5, MinP: 0.01}},
		{"full chain", Config{Temperature: 0.9, TopK: 100, TopP: 0.9, MinP: 0.02, RepeatPenalty: 1.1, PresencePenalty: 0.2, FrequencyPenalty: 0.1}},
	}
	sequence := func(s *Sampler) []int32 {
		var hist []int32
		for range draws {
			hist = append(hist, s.Sample(slices.Clone(logits), hist))
		}
		return hist
	}
	for _, tt := range configs {
		t.Run(tt.name, func(t *testing.T) {
			a, b, other := tt.cfg, tt.cfg, tt.cfg
			a.Seed, b.Seed, other.Seed = 42, 42, 43
			sa := mustNew(t, a, vocab)
			seqA := sequence(sa)
			if seqB := sequence(mustNew(t, b, vocab)); !slices.Equal(seqA, seqB) {
				t.Errorf("same seed gave different sequences:\n%v\n%v", seqA, seqB)
			}
			if seqO := sequence(mustNew(t, other, vocab)); slices.Equal(seqA, seqO) {
				t.Errorf("seeds 42 and 43 gave the same %d tokens", draws)
			}
			sa.Reset()
			if seqR := sequence(sa); !slices.Equal(seqA, seqR) {
				t.Errorf("Reset did not replay the sequence:\n%v\n%v", seqA, seqR)
			}
		})
	}
}

func TestDistribution(t *testing.T) {
	const draws, tol = 20000, 0.02
	tests := []struct {
		name   string
		cfg    Config
		logits []float32
		want   []float64
	}{
		{"temperature 1", Config{Temperature: 1, Seed: 1}, logProbs(0.5, 0.3, 0.2), []float64{0.5, 0.3, 0.2}},
		// Temperature 2 takes square roots of the probabilities.
		{"temperature 2", Config{Temperature: 2, Seed: 2}, logProbs(0.5, 0.3, 0.2),
			normalize(math.Sqrt(0.5), math.Sqrt(0.3), math.Sqrt(0.2))},
		{"top-k 2 renormalises", Config{Temperature: 1, TopK: 2, Seed: 3}, logProbs(0.5, 0.3, 0.2), []float64{0.625, 0.375, 0}},
		{"top-p 0.6", Config{Temperature: 1, TopP: 0.6, Seed: 4}, logProbs(0.5, 0.3, 0.2), []float64{0.625, 0.375, 0}},
		{"top-p unsorted input", Config{Temperature: 1, TopP: 0.6, Seed: 5}, logProbs(0.2, 0.5, 0.3), []float64{0, 0.625, 0.375}},
		{"min-p 0.5", Config{Temperature: 1, MinP: 0.5, Seed: 6}, logProbs(0.5, 0.26, 0.24), []float64{0.5 / 0.76, 0.26 / 0.76, 0}},
		{"masked tokens", Config{Temperature: 1, Seed: 7},
			[]float32{float32(math.Inf(-1)), 0, float32(math.Inf(-1)), 0}, []float64{0, 0.5, 0, 0.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := frequencies(t, mustNew(t, tt.cfg, len(tt.logits)), tt.logits, draws)
			for i := range got {
				if math.Abs(got[i]-tt.want[i]) > tol {
					t.Errorf("token %d: frequency %.4f, want %.4f ± %v (all %v)", i, got[i], tt.want[i], tol, got)
				}
				if tt.want[i] == 0 && got[i] != 0 {
					t.Errorf("token %d sampled with frequency %.4f, want never", i, got[i])
				}
			}
		})
	}
}

func normalize(p ...float64) []float64 {
	var sum float64
	for _, x := range p {
		sum += x
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

func TestFilterExclusion(t *testing.T) {
	const draws = 5000
	tests := []struct {
		name     string
		cfg      Config
		logits   []float32
		excluded []int32
	}{
		{"top-p 0.6 drops id 2", Config{Temperature: 1, TopP: 0.6}, logProbs(0.5, 0.3, 0.2), []int32{2}},
		{"min-p 0.5 drops p<0.25", Config{Temperature: 1, MinP: 0.5}, logProbs(0.5, 0.1, 0.26, 0.14), []int32{1, 3}},
		{"min-p with top-k", Config{Temperature: 1, TopK: 3, MinP: 0.5}, logProbs(0.5, 0.1, 0.26, 0.14), []int32{1, 3}},
		{"top-p then min-p", Config{Temperature: 1, TopP: 0.9, MinP: 0.5}, logProbs(0.45, 0.3, 0.2, 0.05), []int32{2, 3}},
		{"top-k 2", Config{Temperature: 3, TopK: 2}, []float32{1, 4, 3, 2}, []int32{0, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustNew(t, tt.cfg, len(tt.logits))
			seen := make(map[int32]int)
			for range draws {
				seen[s.Sample(slices.Clone(tt.logits), nil)]++
			}
			for _, id := range tt.excluded {
				if seen[id] > 0 {
					t.Errorf("excluded token %d sampled %d times", id, seen[id])
				}
			}
			for id := range int32(len(tt.logits)) {
				if !slices.Contains(tt.excluded, id) && seen[id] == 0 {
					t.Errorf("kept token %d never sampled in %d draws", id, draws)
				}
			}
		})
	}
}

func TestPenalties(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		logits  []float32
		history []int32
		want    []float32
	}{
		{"repeat positive divides, negative multiplies",
			Config{RepeatPenalty: 2}, []float32{4, -3, 0, 1}, []int32{0, 1, 2}, []float32{2, -6, 0, 1}},
		{"repeat applied once per distinct token",
			Config{RepeatPenalty: 2}, []float32{4, -3}, []int32{0, 0, 0, 1, 1}, []float32{2, -6}},
		{"repeat below 1 favours repeats",
			Config{RepeatPenalty: 0.5}, []float32{4, -3}, []int32{0, 1}, []float32{8, -1.5}},
		{"repeat window is the last N",
			Config{RepeatPenalty: 2, RepeatLastN: 2}, []float32{4, 4, 4, 4}, []int32{0, 1, 2, 3}, []float32{4, 4, 2, 2}},
		{"repeat window -1 is whole history",
			Config{RepeatPenalty: 2, RepeatLastN: -1}, []float32{4, 4, 4}, []int32{0, 1}, []float32{2, 2, 4}},
		{"repeat default window is 64",
			Config{RepeatPenalty: 2}, []float32{4, 4, 4}, append([]int32{0, 1}, slices.Repeat([]int32{2}, 63)...), []float32{4, 2, 2}},
		{"repeat penalty 1 is off",
			Config{RepeatPenalty: 1}, []float32{4, -3}, []int32{0, 1}, []float32{4, -3}},
		{"presence once per distinct token",
			Config{PresencePenalty: 0.5}, []float32{1, 1, 1}, []int32{0, 0, 0, 1}, []float32{0.5, 0.5, 1}},
		{"frequency per occurrence",
			Config{FrequencyPenalty: 0.25}, []float32{1, 1, 1}, []int32{0, 0, 0, 1}, []float32{0.25, 0.75, 1}},
		{"presence plus frequency",
			Config{PresencePenalty: 1, FrequencyPenalty: 0.5}, []float32{2, -2, 0}, []int32{1, 0, 1}, []float32{0.5, -4, 0}},
		{"negative presence favours repeats",
			Config{PresencePenalty: -1}, []float32{0, 0}, []int32{1}, []float32{0, 1}},
		{"presence and frequency see the whole history",
			Config{FrequencyPenalty: 1, RepeatLastN: 1}, []float32{0, 0}, []int32{0, 0, 1}, []float32{-2, -1}},
		{"repeat then presence/frequency",
			Config{RepeatPenalty: 2, PresencePenalty: 1, FrequencyPenalty: 1}, []float32{4, -4}, []int32{0, 1, 1}, []float32{0, -11}},
		// The prompt (the first PromptLen) is not counted by presence and
		// frequency (OpenAI: tokens sampled so far), but is by repetition.
		{"presence and frequency skip the prompt",
			Config{PresencePenalty: 1, FrequencyPenalty: 0.5, PromptLen: 3}, []float32{1, 1, 1}, []int32{0, 0, 1, 1, 2}, []float32{1, -0.5, -0.5}},
		{"repetition covers the prompt",
			Config{RepeatPenalty: 2, PromptLen: 2}, []float32{4, 4, 4}, []int32{0, 1, 2}, []float32{2, 2, 2}},
		{"a prompt longer than the history counts nothing",
			Config{FrequencyPenalty: 1, PromptLen: 9}, []float32{1, 1}, []int32{0, 1}, []float32{1, 1}},
		{"out-of-vocab history ignored",
			Config{RepeatPenalty: 2, FrequencyPenalty: 1}, []float32{4, 4}, []int32{-1, 2, 99, 1}, []float32{4, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustNew(t, tt.cfg, len(tt.logits))
			got := slices.Clone(tt.logits)
			s.applyPenalties(got, tt.history)
			if !slices.Equal(got, tt.want) {
				t.Errorf("penalised logits = %v, want %v", got, tt.want)
			}
			if s.counts != nil && slices.ContainsFunc(s.counts, func(c int32) bool { return c != 0 }) {
				t.Errorf("counts not cleared: %v", s.counts)
			}
		})
	}
}

func TestPenaltiesChangeGreedyChoice(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		history []int32
		want    int32
	}{
		{"no penalty", Config{}, []int32{0}, 0},
		{"repeat penalty", Config{RepeatPenalty: 1.5}, []int32{0}, 1},
		{"presence penalty", Config{PresencePenalty: 0.5}, []int32{0}, 1},
		{"frequency penalty needs two", Config{FrequencyPenalty: 0.15}, []int32{0}, 0},
		{"frequency penalty twice", Config{FrequencyPenalty: 0.15}, []int32{0, 0}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustNew(t, tt.cfg, 3)
			if got := s.Sample([]float32{3, 2.8, 1}, tt.history); got != tt.want {
				t.Errorf("Sample = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig(), true},
		{"full chain", Config{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, RepeatLastN: 64, PresencePenalty: -2, FrequencyPenalty: 2, Seed: 9}, true},
		{"bounds", Config{Temperature: 100, TopP: 1, MinP: 1, RepeatLastN: -1}, true},
		{"negative temperature", Config{Temperature: -0.1}, false},
		{"temperature too high", Config{Temperature: 100.5}, false},
		{"NaN temperature", Config{Temperature: nan}, false},
		{"negative top-k", Config{TopK: -1}, false},
		{"top-p above 1", Config{TopP: 1.01}, false},
		{"negative top-p", Config{TopP: -0.1}, false},
		{"NaN top-p", Config{TopP: nan}, false},
		{"min-p above 1", Config{MinP: 2}, false},
		{"negative min-p", Config{MinP: -0.5}, false},
		{"negative repeat penalty", Config{RepeatPenalty: -1}, false},
		{"infinite repeat penalty", Config{RepeatPenalty: inf}, false},
		{"repeat window below -1", Config{RepeatLastN: -2}, false},
		{"NaN presence", Config{PresencePenalty: nan}, false},
		{"infinite frequency", Config{FrequencyPenalty: -inf}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			_, err = New(tt.cfg, 8)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Errorf("New: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestNewRejectsVocabSize(t *testing.T) {
	for _, v := range []int{0, -1} {
		if _, err := New(DefaultConfig(), v); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(vocab %d) = %v, want ErrInvalidConfig", v, err)
		}
	}
}

func TestSampleWrongLengthPanics(t *testing.T) {
	s := mustNew(t, DefaultConfig(), 4)
	defer func() {
		if recover() == nil {
			t.Error("Sample with 3 logits for a vocabulary of 4 did not panic")
		}
	}()
	s.Sample(make([]float32, 3), nil)
}

// TestTopKMatchesSort checks the heap selection against a full sort at sizes
// around the heap's edge cases, including many ties.
func TestTopKMatchesSort(t *testing.T) {
	for _, vocab := range []int{2, 3, 17, 1000} {
		for _, k := range []int{1, 2, 5, vocab - 1} {
			if k < 1 || k >= vocab {
				continue
			}
			logits := randomLogits(uint64(vocab*31+k), vocab)
			for i := range logits {
				logits[i] = float32(math.Round(float64(logits[i]))) // force ties
			}
			s := mustNew(t, Config{Temperature: 1, TopK: k}, vocab)
			s.sc = takeScratch(s.vocab) // as Sample does around a draw
			got, sorted, _ := s.candidates(logits)
			if !sorted {
				t.Fatalf("vocab %d k %d: not reported sorted", vocab, k)
			}
			want := make([]candidate, vocab)
			for i, l := range logits {
				want[i] = candidate{l, int32(i)}
			}
			slices.SortFunc(want, byDescendingLogit)
			if !slices.Equal(got, want[:k]) {
				t.Errorf("vocab %d k %d: top-k = %v, want %v", vocab, k, got, want[:k])
			}
		}
	}
}

const benchVocab = 32000

var benchConfigs = []struct {
	name string
	cfg  Config
}{
	{"greedy", DefaultConfig()},
	{"temperature", Config{Temperature: 0.8}},
	{"top-k 40", Config{Temperature: 0.8, TopK: 40}},
	{"top-p 0.95", Config{Temperature: 0.8, TopP: 0.95}},
	{"min-p 0.05", Config{Temperature: 0.8, MinP: 0.05}},
	{"llama.cpp default", Config{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, PresencePenalty: 0.1, FrequencyPenalty: 0.1}},
}

// peakedLogits lifts 20 tokens 15 logits above a uniform [-10, 10)
// background: closer to a trained model's distribution than randomLogits,
// so the top-p nucleus is small.
func peakedLogits(vocab int) []float32 {
	l := randomLogits(5, vocab)
	for i := range 20 {
		l[i*(vocab/20)] += 15
	}
	return l
}

func benchHistory() []int32 {
	h := make([]int32, 512)
	for i := range h {
		h[i] = int32(i * 61 % benchVocab)
	}
	return h
}

func TestSampleZeroAllocs(t *testing.T) {
	logits, hist := randomLogits(5, benchVocab), benchHistory()
	buf := make([]float32, benchVocab)
	for _, bc := range benchConfigs {
		t.Run(bc.name, func(t *testing.T) {
			s := mustNew(t, bc.cfg, benchVocab)
			allocs := testing.AllocsPerRun(20, func() {
				copy(buf, logits)
				s.Sample(buf, hist)
			})
			if allocs != 0 {
				t.Errorf("%v allocs per Sample, want 0", allocs)
			}
		})
	}
}

// BenchmarkTopPPeaked measures top-p without top-k when the nucleus is small,
// the case the widening partial selection exists for.
func BenchmarkTopPPeaked(b *testing.B) {
	logits := peakedLogits(benchVocab)
	buf := make([]float32, benchVocab)
	s := mustNew(b, Config{Temperature: 0.8, TopP: 0.95}, benchVocab)
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, logits)
		s.Sample(buf, nil)
	}
}

// BenchmarkTopPShapes measures top-p 0.95 without top-k on random logits
// from flat to peaked (logits in [-10, 10) times the scale): nuclei from
// most of the vocabulary down to a few tokens.
func BenchmarkTopPShapes(b *testing.B) {
	for _, scale := range []float32{0.05, 0.6, 3} {
		logits := randomLogits(7, benchVocab)
		for i := range logits {
			logits[i] *= scale
		}
		buf := make([]float32, benchVocab)
		s := mustNew(b, Config{Temperature: 1, TopP: 0.95}, benchVocab)
		b.Run(fmt.Sprintf("scale=%v", scale), func(b *testing.B) {
			for b.Loop() {
				copy(buf, logits)
				s.Sample(buf, nil)
			}
		})
	}
}

func BenchmarkSample(b *testing.B) {
	logits, hist := randomLogits(5, benchVocab), benchHistory()
	buf := make([]float32, benchVocab)
	for _, bc := range benchConfigs {
		b.Run(bc.name, func(b *testing.B) {
			s := mustNew(b, bc.cfg, benchVocab)
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, logits)
				s.Sample(buf, hist)
			}
		})
	}
}

// A generation continued by a new Sampler with Skip set to the tokens
// already drawn samples exactly the tokens the uninterrupted one did.
func TestSkipContinuesTheStream(t *testing.T) {
	const vocab, draws, cut = 300, 60, 23
	logits := randomLogits(5, vocab)
	for _, c := range []Config{
		{Temperature: 1.1, TopP: 0.9, FrequencyPenalty: 0.3},
		{Temperature: 0, PresencePenalty: 0.5}, // greedy: nothing to skip
	} {
		c.Seed = 7
		var whole []int32
		s := mustNew(t, c, vocab)
		for range draws {
			whole = append(whole, s.Sample(slices.Clone(logits), whole))
		}
		c.Skip = cut
		cont := mustNew(t, c, vocab)
		hist := slices.Clone(whole[:cut])
		for range draws - cut {
			hist = append(hist, cont.Sample(slices.Clone(logits), hist))
		}
		if !slices.Equal(hist, whole) {
			t.Errorf("%+v: continued %v, want %v", c, hist[cut:], whole[cut:])
		}
		cont.Reset()
		if got := cont.Sample(slices.Clone(logits), whole[:cut]); got != whole[cut] {
			t.Errorf("%+v: after Reset sampled %d, want %d", c, got, whole[cut])
		}
	}
	if _, err := New(Config{Skip: -1}, vocab); err == nil {
		t.Error("a negative Skip was accepted")
	}
}

// TestDrawIndex checks the chunked search against one token at a time on
// weights whose sums are exact (small multiples of 1/8), so the two must
// agree everywhere: zeros inside and around chunks, r past the total
// (rounding's fallback to the last nonzero weight), short vectors.
func TestDrawIndex(t *testing.T) {
	seq := func(w []float64, r float64) int {
		last := 0
		for i, x := range w {
			if x == 0 {
				continue
			}
			last = i
			r -= x
			if r < 0 {
				return i
			}
		}
		return last
	}
	rng := rand.New(rand.NewPCG(81, 82))
	for _, n := range []int{1, 7, 8, 9, 16, 17, 100, 1000} {
		for trial := range 200 {
			w := make([]float64, n)
			total := 0.0
			for i := range w {
				if rng.IntN(3) > 0 || trial%7 == 0 {
					w[i] = float64(rng.IntN(16)) / 8
				}
				total += w[i]
			}
			if total == 0 {
				w[rng.IntN(n)] = 0.5
				total = 0.5
			}
			if trial%5 == 0 { // trailing zeros after the last weight
				for i := n - 1; i >= 0 && i > n/2; i-- {
					total -= w[i]
					w[i] = 0
				}
				if total == 0 {
					w[0], total = 1, 1
				}
			}
			for _, r := range []float64{0, rng.Float64() * total, total - 1.0/8, total, total + 1} {
				if got, want := drawIndex(w, r), seq(w, r); got != want {
					t.Fatalf("n=%d trial %d r=%v: drawIndex = %d, one at a time %d (w %v)", n, trial, r, got, want, w)
				}
			}
		}
	}
}

// TestSortCandidates checks orderKey and both sorts (comparison up to 1024
// tokens, radix above) against byDescendingLogit: ties (to the lower id),
// signed zeros, NaN (as -Inf), infinities, denormals, and logits that share
// their upper key bytes.
func TestSortCandidates(t *testing.T) {
	r := rand.New(rand.NewPCG(91, 92))
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	specials := []float32{nan, inf, -inf, 0, float32(math.Copysign(0, -1)), 1e-40, -1e-40, 3, -3}
	for _, n := range []int{1, 2, 3, 17, 256, 5000} {
		for trial := range 30 {
			logits := make([]float32, n)
			for i := range logits {
				switch {
				case trial%3 == 0:
					logits[i] = float32(r.IntN(5)) // many ties
				case trial%3 == 1:
					logits[i] = 1 + float32(r.IntN(1<<10))/(1<<20) // shared upper bytes
				default:
					logits[i] = float32(r.NormFloat64() * 10)
				}
				if r.IntN(10) == 0 {
					logits[i] = specials[r.IntN(len(specials))]
				}
			}
			want := make([]candidate, n)
			for i, l := range logits {
				want[i] = candidate{logit: sanitize(l), id: int32(i)}
			}
			slices.SortFunc(want, byDescendingLogit)
			got := make([]candidate, n)
			keys := make([]uint64, n)
			for i, l := range logits {
				keys[i] = uint64(orderKey(l))<<32 | uint64(i)
			}
			sortCandidates(got, logits, keys, make([]uint64, n))
			for i := range want {
				if got[i].id != want[i].id || math.Float32bits(got[i].logit) != math.Float32bits(want[i].logit) {
					t.Fatalf("n=%d trial %d: position %d is %+v, want %+v", n, trial, i, got[i], want[i])
				}
			}
		}
	}
}

// TestNucleusHoldsTheNucleus checks, over many shapes, temperatures and
// top-p values, that the bucketed selection returns a prefix of the
// sorted vocabulary that holds the whole nucleus as Sample measures it
// (the same per-token weights, summed in sorted order).
func TestNucleusHoldsTheNucleus(t *testing.T) {
	r := rand.New(rand.NewPCG(101, 102))
	for trial := range 300 {
		vocab := []int{37, 512, 5000, 32000}[trial%4]
		scale := []float32{0.05, 0.6, 3, 20}[trial/4%4]
		logits := randomLogits(uint64(trial), vocab)
		for i := range logits {
			logits[i] *= scale
			if r.IntN(50) == 0 {
				logits[i] = float32(r.IntN(3)) // ties
			}
		}
		c := Config{Temperature: float32(0.3 + 1.5*r.Float64()), TopP: float32(0.05 + 0.949*r.Float64())}
		s := mustNew(t, c, vocab)
		s.sc = takeScratch(s.vocab) // as Sample does around a draw
		cand, sorted, base := s.candidates(logits)
		cand = slices.Clone(cand)
		want := make([]candidate, vocab)
		for i, l := range logits {
			want[i] = candidate{l, int32(i)}
		}
		slices.SortFunc(want, byDescendingLogit)
		if !sorted || base <= 0 || !slices.Equal(cand, want[:len(cand)]) {
			t.Fatalf("trial %d: %d candidates, sorted %v, base %v: not a prefix of the sorted vocabulary", trial, len(cand), sorted, base)
		}
		l := make([]float32, vocab)
		for i, x := range want {
			l[i] = x.logit
		}
		w := make([]float64, vocab)
		kernels.ExpSum(w, l, want[0].logit, 1/float64(c.Temperature))
		target := float64(c.TopP) * base
		var cum float64
		need := vocab
		for i, x := range w {
			cum += x
			if cum >= target {
				need = i + 1
				break
			}
		}
		if len(cand) < need {
			t.Fatalf("trial %d (vocab %d, scale %v, %+v): %d candidates, the nucleus has %d", trial, vocab, scale, c, len(cand), need)
		}
	}
}

// TestDrawTopPMatchesDraw: top-p alone takes drawTopP, which sorts only the
// buckets it needs; it picks the token draw (the whole nucleus sorted) picks
// for the same uniform draw, over vocabularies, shapes from flat to peaked,
// ties, NaN and -Inf logits, temperatures and top-p values. (They may
// differ only when the draw lies within ~1e-16 of a boundary between two
// tokens' shares, which random draws never hit.)
func TestDrawTopPMatchesDraw(t *testing.T) {
	r := rand.New(rand.NewPCG(111, 112))
	nan, inf := float32(math.NaN()), float32(math.Inf(-1))
	for trial := range 400 {
		vocab := []int{1, 2, 37, 512, 5000, 32000}[trial%6]
		scale := []float32{0.01, 0.05, 0.6, 3, 20}[trial/6%5]
		logits := randomLogits(uint64(trial), vocab)
		for i := range logits {
			logits[i] *= scale
			switch r.IntN(40) {
			case 0:
				logits[i] = float32(r.IntN(3)) // ties
			case 1:
				logits[i] = nan
			case 2:
				logits[i] = inf
			}
		}
		c := Config{Temperature: float32(0.2 + 1.6*r.Float64()), TopP: float32(0.01 + 0.98*r.Float64())}
		s := mustNew(t, c, vocab)
		for range 20 {
			u := r.Float64()
			s.sc = takeScratch(vocab)
			got, ok := s.drawTopP(slices.Clone(logits), u)
			want := s.draw(slices.Clone(logits), u)
			putScratch(s.sc)
			s.sc = nil
			if allNegInf := !slices.ContainsFunc(logits, func(l float32) bool { return l > inf }); ok == allNegInf {
				t.Fatalf("trial %d: drawTopP ok %v with every logit -Inf or NaN: %v", trial, ok, allNegInf)
			}
			if ok && got != want {
				t.Fatalf("trial %d (vocab %d, scale %v, %+v, u %v): drawTopP = %d, draw = %d", trial, vocab, scale, c, u, got, want)
			}
		}
	}
}

// TestTopPBoundary: the nucleus ends at the first token whose running sum
// reaches TopP of the total (>=, as the documented chain and llama.cpp):
// four equal logits at TopP 0.5 keep exactly the first two (ties to the
// lower id), and the tokens after the nucleus, -Inf ones among them, are
// never drawn, even with u just below 1.
func TestTopPBoundary(t *testing.T) {
	ninf := float32(math.Inf(-1))
	for _, tc := range []struct {
		name   string
		logits []float32
		topP   float32
		want   []int32 // the tokens that may be drawn
	}{
		{"four ties", []float32{1, 1, 1, 1}, 0.5, []int32{0, 1}},
		{"ties in a large vocabulary", append([]float32{2, 2, 2, 2}, slices.Repeat([]float32{ninf}, 3000)...), 0.5, []int32{0, 1}},
		{"-Inf tail", []float32{ninf, 0, ninf, 0, ninf}, 0.9, []int32{1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustNew(t, Config{Temperature: 1, TopP: tc.topP}, len(tc.logits))
			for _, u := range []float64{0, 0.25, 0.49, 0.5, 0.75, math.Nextafter(1, 0)} {
				s.sc = takeScratch(len(tc.logits))
				got, ok := s.drawTopP(slices.Clone(tc.logits), u)
				putScratch(s.sc)
				s.sc = nil
				if !ok || !slices.Contains(tc.want, got) {
					t.Errorf("u %v: drawTopP = %d, %v; want one of %v", u, got, ok, tc.want)
				}
			}
		})
	}
}

// TestTopPInfiniteLogit: a +Inf logit leaves every weight 0 (NaN for
// itself); top-p must still return a token, the +Inf one, at every
// vocabulary size (a regression: the nucleus came back empty).
func TestTopPInfiniteLogit(t *testing.T) {
	for _, vocab := range []int{1, 3, 2001} {
		logits := make([]float32, vocab)
		for i := range logits {
			logits[i] = float32(i % 7)
		}
		logits[vocab-1] = float32(math.Inf(1))
		s := mustNew(t, Config{Temperature: 1, TopP: 0.5}, vocab)
		if got := s.Sample(slices.Clone(logits), nil); got != int32(vocab-1) {
			t.Errorf("vocab %d: Sample = %d, want the +Inf token %d", vocab, got, vocab-1)
		}
	}
}

// TestSamplersShareDrawBuffers: a Sampler keeps no vocabulary-sized
// buffers of its own, so many running sequences cost little memory, and
// draws that run one after another reuse one set of buffers.
func TestSamplersShareDrawBuffers(t *testing.T) {
	const vocab, n = 32000, 64
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ss := make([]*Sampler, n)
	for i := range ss {
		ss[i] = mustNew(t, Config{Temperature: 0.8, TopP: 0.9, Seed: uint64(i)}, vocab)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
		t.Errorf("%d samplers of a %d-token vocabulary allocated %d bytes, want < 64 KiB (no per-sampler draw buffers)", n, vocab, got)
	}
	logits := randomLogits(7, vocab)
	ss[0].Sample(slices.Clone(logits), nil)
	first := lastScratch()
	if first == nil {
		t.Fatal("a draw did not return its buffers to the list")
	}
	for _, s := range ss[1:] {
		s.Sample(slices.Clone(logits), nil)
		if sc := lastScratch(); sc != first {
			t.Fatal("a draw after another did not reuse its buffers")
		}
	}
}

// lastScratch is the buffer set the next draw takes.
func lastScratch() *scratch {
	scratches.mu.Lock()
	defer scratches.mu.Unlock()
	if len(scratches.free) == 0 {
		return nil
	}
	return scratches.free[len(scratches.free)-1]
}

// TestConcurrentDrawsDeterministic: samplers drawing at once on several
// goroutines (as the engine's draws run on its threads) each get their own
// buffers and give the tokens they give one at a time.
func TestConcurrentDrawsDeterministic(t *testing.T) {
	const vocab, seqs, steps = 4096, 24, 40
	configs := []Config{{Temperature: 0.9}, {Temperature: 0.7, TopP: 0.8}, {Temperature: 1.1, TopK: 40}, {Temperature: 1, MinP: 0.05}}
	run := func(concurrent bool) [][]int32 {
		out := make([][]int32, seqs)
		var wg sync.WaitGroup
		for i := range seqs {
			body := func() {
				s := mustNew(t, withSeed(configs[i%len(configs)], uint64(i+1)), vocab)
				for step := range steps {
					out[i] = append(out[i], s.Sample(randomLogits(uint64(i*steps+step), vocab), nil))
				}
			}
			if concurrent {
				wg.Go(body)
			} else {
				body()
			}
		}
		wg.Wait()
		return out
	}
	want, got := run(false), run(true)
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("sequence %d: concurrent draws %v, one at a time %v", i, got[i], want[i])
		}
	}
}

// TestDrawBuffersKeptForPeakConcurrency: after n draws ran at once, the
// list holds n sets, so the next n concurrent draws allocate none (a node
// with more threads than some fixed cap would otherwise allocate sets every
// step), and it never holds more sets than were taken at once.
func TestDrawBuffersKeptForPeakConcurrency(t *testing.T) {
	const vocab, n = 1000, 40
	scratches.mu.Lock()
	saved := scratches.free
	scratches.free = nil
	scratches.mu.Unlock()
	t.Cleanup(func() {
		scratches.mu.Lock()
		scratches.free = saved
		scratches.mu.Unlock()
	})
	take := func() map[*scratch]bool {
		sets := make([]*scratch, n)
		for i := range sets { // all taken before any is returned: n draws at once
			sets[i] = takeScratch(vocab)
		}
		for _, sc := range sets {
			putScratch(sc)
		}
		m := map[*scratch]bool{}
		for _, sc := range sets {
			m[sc] = true
		}
		return m
	}
	first := take()
	if len(first) != n {
		t.Fatalf("%d draws at once shared buffers: %d distinct sets", n, len(first))
	}
	second := take()
	for sc := range second {
		if !first[sc] {
			t.Fatal("the second round allocated a set although the first returned all of its own")
		}
	}
	scratches.mu.Lock()
	defer scratches.mu.Unlock()
	if len(scratches.free) != n {
		t.Errorf("the list holds %d sets after at most %d draws at once", len(scratches.free), n)
	}
}

func withSeed(c Config, seed uint64) Config {
	c.Seed = seed
	return c
}
