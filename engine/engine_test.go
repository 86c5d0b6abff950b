package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/kvcache"
	"github.com/conclave-ai/conclave/model/sample"
	"github.com/conclave-ai/conclave/model/synth"
)

// testWeights synthesizes a model (tiny by default, Q8_0 weights) once per test.
func testWeights(t testing.TB, preset string, mutate func(*synth.Config)) *model.Weights {
	t.Helper()
	cfg := testmodel.Config(t, preset, func(c *synth.Config) {
		if preset == "tiny" {
			c.Type = kernels.Q8_0
		}
		if mutate != nil {
			mutate(c)
		}
	})
	_, w := testmodel.Load(t, cfg)
	return w
}

func testConfig() Config {
	c := DefaultConfig()
	c.MaxBatchTokens = 64
	c.MaxRunning = 16
	c.MaxQueue = 64
	c.PrefillChunk = 24
	c.KVBlocks = 256
	c.AdmitHeadroom = 1
	return c
}

func newEngine(t testing.TB, w *model.Weights, cfg Config, isEOG func(int32) bool, opts ...Option) *Engine {
	t.Helper()
	pool := kernels.NewPool(2)
	e, err := New(cfg, w, pool, isEOG, opts...)
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		pool.Close()
	})
	return e
}

func tokens(n, vocab int, seed uint64) []int32 {
	rng := rand.New(rand.NewPCG(seed, 3))
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(rng.IntN(vocab))
	}
	return out
}

// result is what a request produced.
type result struct {
	tokens []int32
	events []Event
	done   Event
}

// collect reads a request's events to the end.
func collect(t testing.TB, ch <-chan Event) result {
	t.Helper()
	var r result
	for ev := range ch {
		if ev.Done {
			r.done = ev
			continue
		}
		if !ev.HasToken {
			t.Errorf("event without a token before Done: %+v", ev)
		}
		r.tokens = append(r.tokens, ev.Token)
		r.events = append(r.events, ev)
	}
	if !r.done.Done {
		t.Fatalf("channel closed without a Done event")
	}
	return r
}

func run(t testing.TB, e *Engine, r Request) result {
	t.Helper()
	ch, err := e.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	res := collect(t, ch)
	if res.done.Err != nil {
		t.Fatalf("request %s: %v", r.ID, res.done.Err)
	}
	return res
}

// reference generates with the plain runner on a contiguous cache: what the
// engine must reproduce token for token.
func reference(t testing.TB, w *model.Weights, prompt []int32, n int, sc sample.Config) []int32 {
	t.Helper()
	pool := kernels.NewPool(1)
	defer pool.Close()
	c, err := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: w.Ctx, KVDim: w.KVDim(), Type: kernels.F16})
	if err != nil {
		t.Fatal(err)
	}
	sc.PromptLen = len(prompt) // as Submit sets it: penalties count what is generated
	s, err := sample.New(sc, w.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := model.NewRunner(w, pool, 16).Generate(context.Background(), c, prompt, n, s, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPlanStep(t *testing.T) {
	for _, tc := range []struct {
		name          string
		pending       []int
		budget, chunk int
		want          []span
	}{
		{"empty", nil, 8, 4, nil},
		{"decode only", []int{1, 1, 1}, 8, 4, []span{{0, 1}, {1, 1}, {2, 1}}},
		{"decode first then prefill oldest first", []int{10, 1, 3, 1}, 8, 4, []span{{1, 1}, {3, 1}, {0, 4}, {2, 2}}},
		{"chunk caps a long prompt", []int{100}, 64, 16, []span{{0, 16}}},
		{"budget cuts the last chunk", []int{5, 5, 5}, 12, 5, []span{{0, 5}, {1, 5}, {2, 2}}},
		{"budget exhausted by decodes", []int{1, 1, 9}, 2, 4, []span{{0, 1}, {1, 1}}},
		{"nothing pending is skipped", []int{0, 1, 0, 2}, 8, 8, []span{{1, 1}, {3, 2}}},
		{"short prompt ends in one step", []int{3}, 8, 8, []span{{0, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := planStep(nil, tc.pending, tc.budget, tc.chunk)
			if !slices.Equal(got, tc.want) {
				t.Errorf("planStep(%v, %d, %d) = %v, want %v", tc.pending, tc.budget, tc.chunk, got, tc.want)
			}
			total := 0
			for _, s := range got {
				total += s.Count
			}
			if total > tc.budget {
				t.Errorf("planned %d tokens over a budget of %d", total, tc.budget)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		valid  bool
	}{
		{"default", func(*Config) {}, true},
		{"blocks instead of bytes", func(c *Config) { c.KVBlocks, c.KVBytes = 100, 0 }, true},
		{"no running", func(c *Config) { c.MaxRunning = 0 }, false},
		{"batch smaller than running", func(c *Config) { c.MaxBatchTokens = c.MaxRunning - 1 }, false},
		{"no queue", func(c *Config) { c.MaxQueue = 0 }, false},
		{"zero block size", func(c *Config) { c.BlockSize = 0 }, false},
		{"no kv memory", func(c *Config) { c.KVBlocks, c.KVBytes = 0, 0 }, false},
		{"q8 kv", func(c *Config) { c.KVType = kernels.Q8_0 }, false},
		{"negative chunk", func(c *Config) { c.PrefillChunk = -1 }, false},
		{"no event buffer", func(c *Config) { c.EventBuffer = 0 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			if (err == nil) != tc.valid || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Errorf("Validate = %v, want valid %v", err, tc.valid)
			}
		})
	}
	t.Run("pool smaller than a context", func(t *testing.T) {
		w := testWeights(t, "tiny", nil)
		c := testConfig()
		c.KVBlocks = w.Ctx/c.BlockSize - 1
		pool := kernels.NewPool(1)
		defer pool.Close()
		if _, err := New(c, w, pool, nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New = %v, want ErrInvalidConfig", err)
		}
	})
}

func TestSubmitValidation(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	e := newEngine(t, w, testConfig(), nil)
	ok := Request{Prompt: []int32{1, 2, 3}, MaxTokens: 4}
	for _, tc := range []struct {
		name   string
		mutate func(*Request)
		want   error
	}{
		{"empty prompt", func(r *Request) { r.Prompt = nil }, ErrInvalidRequest},
		{"zero max tokens", func(r *Request) { r.MaxTokens = 0 }, ErrInvalidRequest},
		{"token outside vocab", func(r *Request) { r.Prompt = []int32{int32(w.Vocab)} }, ErrInvalidRequest},
		{"negative token", func(r *Request) { r.Prompt = []int32{-1} }, ErrInvalidRequest},
		{"stop token outside vocab", func(r *Request) { r.StopTokens = []int32{int32(w.Vocab)} }, ErrInvalidRequest},
		{"too many top logprobs", func(r *Request) { r.TopLogprobs = MaxTopLogprobs + 1 }, ErrInvalidRequest},
		{"bad sampling", func(r *Request) { r.Sampling.Temperature = -1 }, ErrInvalidRequest},
		{"prompt + max tokens past context", func(r *Request) { r.MaxTokens = w.Ctx - 2 }, ErrContextLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.mutate(&r)
			if _, err := e.Submit(context.Background(), r); !errors.Is(err, tc.want) {
				t.Errorf("Submit = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("exactly the context", func(t *testing.T) {
		r := ok
		r.MaxTokens = w.Ctx - len(r.Prompt)
		r.StopTokens = nil
		ch, err := e.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		res := collect(t, ch)
		if res.done.FinishReason != FinishLength || len(res.tokens) != r.MaxTokens {
			t.Errorf("finished %q after %d tokens, want length after %d", res.done.FinishReason, len(res.tokens), r.MaxTokens)
		}
	})
	t.Run("closed", func(t *testing.T) {
		e2 := newEngine(t, w, testConfig(), nil)
		e2.Close()
		if _, err := e2.Submit(context.Background(), ok); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Close = %v, want ErrClosed", err)
		}
		if _, err := e2.Embed(context.Background(), ok.Prompt); !errors.Is(err, ErrClosed) {
			t.Errorf("Embed after Close = %v, want ErrClosed", err)
		}
	})
}

// TestBatchComposition checks that a request's tokens do not depend on what
// else is in the batch: alone, among 7 concurrent others, and against the
// plain runner on a contiguous cache; greedy and seeded sampling.
func TestBatchComposition(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	for _, sc := range []struct {
		name string
		cfg  sample.Config
	}{
		{"greedy", sample.Config{}},
		{"seeded", sample.Config{Temperature: 0.9, TopP: 0.95, Seed: 42, RepeatPenalty: 1.1}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			prompt := tokens(37, w.Vocab, 1)
			const n = 20
			want := reference(t, w, prompt, n, sc.cfg)
			e := newEngine(t, w, testConfig(), nil)
			alone := run(t, e, Request{ID: "alone", Prompt: prompt, MaxTokens: n, Sampling: sc.cfg})
			if !slices.Equal(alone.tokens, want) {
				t.Fatalf("engine alone %v, runner %v", alone.tokens, want)
			}
			e2 := newEngine(t, w, testConfig(), nil) // a cold prefix cache
			var wg sync.WaitGroup
			results := make([]result, 8)
			for i := range results {
				r := Request{ID: fmt.Sprint(i), Prompt: tokens(5+9*i, w.Vocab, uint64(100+i)), MaxTokens: n + i, Sampling: sc.cfg}
				if i == 3 {
					r.Prompt, r.MaxTokens = prompt, n
				}
				ch, err := e2.Submit(context.Background(), r)
				if err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = collect(t, ch)
				}()
			}
			wg.Wait()
			if !slices.Equal(results[3].tokens, want) {
				t.Errorf("among 7 others %v, alone %v", results[3].tokens, want)
			}
			if st := e2.Stats(); st.Steps >= int64(8*n) {
				t.Errorf("%d steps for 8 concurrent requests of ~%d tokens: not batched", st.Steps, n)
			}
		})
	}
}

func TestPrefixCacheReuse(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	e := newEngine(t, w, testConfig(), nil)
	prompt := tokens(100, w.Vocab, 2)
	first := run(t, e, Request{Prompt: prompt, MaxTokens: 10})
	if first.done.CachedTokens != 0 || first.done.PromptTokens != 100 {
		t.Errorf("first: cached %d of %d", first.done.CachedTokens, first.done.PromptTokens)
	}
	second := run(t, e, Request{Prompt: prompt, MaxTokens: 10})
	if second.done.CachedTokens < 96 {
		t.Errorf("second: %d cached tokens, want ≥ 96", second.done.CachedTokens)
	}
	if !slices.Equal(first.tokens, second.tokens) {
		t.Errorf("second %v, first %v", second.tokens, first.tokens)
	}
	st := e.Stats()
	if st.PrefixHits != int64(second.done.CachedTokens) || st.PrefixLookups != 200 {
		t.Errorf("stats: %d hits of %d looked up", st.PrefixHits, st.PrefixLookups)
	}
	// Prompt tokens count each request's whole prompt, cached or not
	// (vLLM's prompt_tokens_total).
	if st.PromptTokens != 200 || st.GeneratedTokens != 20 {
		t.Errorf("stats: %d prompt tokens, %d generated", st.PromptTokens, st.GeneratedTokens)
	}
	if st.KVBlocksUsed != 0 || st.KVBlocksCached == 0 || st.Running != 0 || st.Waiting != 0 {
		t.Errorf("stats after both finished: %+v", st)
	}
	// One observation per step; the rows are the prompt tokens computed
	// and each request's generated tokens but the last, fed back.
	if n := st.StepTokens.Count(); n != uint64(st.Steps) || st.StepSeconds.Count() != n || st.StepSeconds.Sum <= 0 {
		t.Errorf("step histograms: %d and %d observations (%v s) for %d steps", n, st.StepSeconds.Count(), st.StepSeconds.Sum, st.Steps)
	}
	if got, want := st.StepTokens.Sum, float64(st.PromptTokens-st.PrefixHits+st.GeneratedTokens-2); got != want {
		t.Errorf("step rows sum to %v, want %v", got, want)
	}
	if cum := st.StepTokens.Cumulative(StepTokensBounds); cum[8192] != st.StepTokens.Count() || cum[1] == 0 {
		t.Errorf("cumulative step rows %v", cum)
	}
}

// TestSessionTurns: a second turn (first prompt + reply + new message)
// reuses the blocks of the first turn's prompt and reply.
func TestSessionTurns(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	e := newEngine(t, w, testConfig(), nil)
	turn1 := tokens(45, w.Vocab, 3)
	r1 := run(t, e, Request{SessionID: "s", Prompt: turn1, MaxTokens: 30})
	turn2 := append(append(slices.Clone(turn1), r1.tokens...), tokens(12, w.Vocab, 4)...)
	r2 := run(t, e, Request{SessionID: "s", Prompt: turn2, MaxTokens: 8})
	// Positions computed in turn 1: 45 + 30 − 1 (the last token was never fed).
	if want := (45 + 30 - 1) / 16 * 16; r2.done.CachedTokens != want {
		t.Errorf("turn 2 reused %d tokens, want %d", r2.done.CachedTokens, want)
	}
	if want := reference(t, w, turn2, 8, sample.Config{}); !slices.Equal(r2.tokens, want) {
		t.Errorf("turn 2 %v, runner %v", r2.tokens, want)
	}
}

// TestEvictionAndPreemption runs many distinct requests through a pool
// barely larger than one context: cached blocks get evicted, running
// sequences get preempted, and every output still equals the runner's.
func TestEvictionAndPreemption(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	cfg := testConfig()
	cfg.KVBlocks = w.Ctx/cfg.BlockSize + 2 // 18 blocks of 16
	cfg.AdmitHeadroom = 0
	e := newEngine(t, w, cfg, nil)
	const n = 12
	var reqs []Request
	for i := range 10 {
		reqs = append(reqs, Request{ID: fmt.Sprint(i), Prompt: tokens(30+7*i, w.Vocab, uint64(200+i)), MaxTokens: n + 3*i})
	}
	chans := make([]<-chan Event, len(reqs))
	for i, r := range reqs {
		ch, err := e.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		chans[i] = ch
	}
	for i, ch := range chans {
		got := collect(t, ch)
		if got.done.Err != nil {
			t.Fatalf("request %d: %v", i, got.done.Err)
		}
		if want := reference(t, w, reqs[i].Prompt, reqs[i].MaxTokens, sample.Config{}); !slices.Equal(got.tokens, want) {
			t.Errorf("request %d: %v, runner %v", i, got.tokens, want)
		}
	}
	// And again, sequentially, now that the cache holds a mix of them.
	for i := len(reqs) - 1; i >= 0; i -= 3 {
		got := run(t, e, reqs[i])
		if want := reference(t, w, reqs[i].Prompt, reqs[i].MaxTokens, sample.Config{}); !slices.Equal(got.tokens, want) {
			t.Errorf("rerun %d: %v, runner %v", i, got.tokens, want)
		}
	}
	st := e.Stats()
	t.Logf("stats: %+v", st)
	if st.Evictions == 0 {
		t.Errorf("no evictions with a pool of %d blocks", cfg.KVBlocks)
	}
	if st.Preemptions == 0 {
		t.Errorf("no preemptions with a pool of %d blocks", cfg.KVBlocks)
	}
	if st.KVBlocksUsed != 0 {
		t.Errorf("%d blocks used after every request finished", st.KVBlocksUsed)
	}
}

// TestAdmissionPromisesBlocksOnce: two prompts that cannot both hold their
// blocks are submitted together. Admission must count what the first one
// still has to allocate (its prefill runs a chunk a step), so the second
// waits instead of being admitted, prefilled part way and preempted.
func TestAdmissionPromisesBlocksOnce(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	cfg := testConfig()
	cfg.KVBlocks = w.Ctx/cfg.BlockSize + 2 // room for one 150-token prompt (10 blocks), not two
	cfg.AdmitHeadroom = 1
	e := newEngine(t, w, cfg, nil)
	var reqs []Request
	var chans []<-chan Event
	for i := range 2 {
		r := Request{ID: fmt.Sprint(i), Prompt: tokens(150, w.Vocab, uint64(900+i)), MaxTokens: 4}
		ch, err := e.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		reqs, chans = append(reqs, r), append(chans, ch)
	}
	for i, ch := range chans {
		if got, want := collect(t, ch), reference(t, w, reqs[i].Prompt, reqs[i].MaxTokens, sample.Config{}); !slices.Equal(got.tokens, want) {
			t.Errorf("request %d: %v, runner %v", i, got.tokens, want)
		}
	}
	// Rows computed: the two prompts and each request's fed-back tokens.
	if st := e.Stats(); st.Preemptions != 0 || st.StepTokens.Sum != 300+2*3 {
		t.Errorf("%d preemptions, %v rows computed for 306: admission promised the same blocks twice", st.Preemptions, st.StepTokens.Sum)
	}
}

func TestCancellation(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	pool := kernels.NewPool(1)
	defer pool.Close()
	// The scheduler parks inside the request's second step (its first
	// has published the stats), so it is certainly running when it is
	// cancelled: the tiny model generates 200 tokens in ~10 ms, and a test
	// goroutine that lost its CPU used to find it finished.
	gate := &gateExperts{inner: &model.LocalExperts{W: w, Pool: pool}, entered: make(chan struct{}), release: make(chan struct{})}
	e := newEngine(t, w, testConfig(), nil, WithExperts(gate))
	base := e.Stats()
	ctx, cancel := context.WithCancel(context.Background())
	gate.skip.Store(int32(len(w.Blocks))) // every layer of the first step
	gate.armed.Store(true)
	ch, err := e.Submit(ctx, Request{Prompt: tokens(40, w.Vocab, 5), MaxTokens: 200})
	if err != nil {
		t.Fatal(err)
	}
	<-gate.entered
	if st := e.Stats(); st.KVBlocksUsed == 0 || st.Running != 1 {
		t.Errorf("while running: %+v", st)
	}
	cancel()
	close(gate.release)
	res := collect(t, ch)
	if res.done.FinishReason != FinishCancel {
		t.Errorf("finish %q, want %q", res.done.FinishReason, FinishCancel)
	}
	if len(res.tokens) >= 200 {
		t.Errorf("generated %d tokens after cancelling", len(res.tokens))
	}
	st := e.Stats()
	if st.KVBlocksUsed != base.KVBlocksUsed || st.Running != 0 {
		t.Errorf("after cancel: %d blocks used, %d running; want %d, 0", st.KVBlocksUsed, st.Running, base.KVBlocksUsed)
	}
	if st.KVBlocksUsed+st.KVBlocksCached > st.KVBlocksTotal {
		t.Errorf("block accounting: %+v", st)
	}

	t.Run("cancelled while queued", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ch, err := e.Submit(ctx, Request{Prompt: tokens(10, w.Vocab, 6), MaxTokens: 5})
		if err != nil {
			t.Fatal(err)
		}
		if res := collect(t, ch); res.done.FinishReason != FinishCancel {
			t.Errorf("finish %q", res.done.FinishReason)
		}
		if st := e.Stats(); st.KVBlocksUsed != 0 || st.Waiting != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestOverloaded(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	cfg := testConfig()
	cfg.MaxRunning, cfg.MaxQueue = 1, 1
	pool := kernels.NewPool(1)
	defer pool.Close()
	// The scheduler parks inside a step while the queue fills, so the
	// running request cannot finish before it is cancelled.
	gate := &gateExperts{inner: &model.LocalExperts{W: w, Pool: pool}, entered: make(chan struct{}), release: make(chan struct{})}
	e := newEngine(t, w, cfg, nil, WithExperts(gate))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := Request{Prompt: tokens(8, w.Vocab, 7), MaxTokens: 200}
	gate.armed.Store(true)
	ch1, err := e.Submit(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	// Parked in ch1's first step: it runs. (Parking after its first token
	// instead raced the event buffer: a test goroutine that lost its CPU
	// let the engine cancel ch1 as a slow consumer, and no step came.)
	<-gate.entered
	ch2, err := e.Submit(ctx, long) // waits: MaxRunning is 1
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Submit(ctx, long); !errors.Is(err, ErrOverloaded) {
		t.Errorf("third Submit = %v, want ErrOverloaded", err)
	}
	cancel()
	close(gate.release)
	for _, ch := range []<-chan Event{ch1, ch2} {
		if res := collect(t, ch); res.done.FinishReason != FinishCancel {
			t.Errorf("finish %q", res.done.FinishReason)
		}
	}
	// The queue has room again.
	if _, err := e.Submit(context.Background(), Request{Prompt: []int32{1}, MaxTokens: 1}); err != nil {
		t.Errorf("Submit after the queue drained: %v", err)
	}
}

func TestSlowConsumer(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	cfg := testConfig()
	cfg.EventBuffer = 3
	e := newEngine(t, w, cfg, nil)
	ch, err := e.Submit(context.Background(), Request{Prompt: tokens(8, w.Vocab, 8), MaxTokens: 50})
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads ch until the engine gave up on its reader; meanwhile
	// other requests (that fit their buffers) complete.
	for i := 0; ; i++ {
		other := run(t, e, Request{Prompt: tokens(8, w.Vocab, 9), MaxTokens: 3})
		if len(other.tokens) != 3 {
			t.Errorf("the other request got %d tokens", len(other.tokens))
		}
		if e.Stats().Running == 0 {
			break
		}
		if i == 100 {
			t.Fatalf("the unread request is still running")
		}
	}
	res := collect(t, ch)
	if res.done.FinishReason != FinishCancel || !errors.Is(res.done.Err, ErrSlowConsumer) || len(res.tokens) != 3 {
		t.Errorf("slow reader: %d tokens, finish %q, err %v", len(res.tokens), res.done.FinishReason, res.done.Err)
	}
}

func TestStopTokens(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	prompt := tokens(20, w.Vocab, 10)
	want := reference(t, w, prompt, 16, sample.Config{})
	stop := want[5]
	cut := slices.Index(want, stop) + 1
	t.Run("stop token", func(t *testing.T) {
		e := newEngine(t, w, testConfig(), nil)
		res := run(t, e, Request{Prompt: prompt, MaxTokens: 16, StopTokens: []int32{stop}})
		if res.done.FinishReason != FinishStop || !slices.Equal(res.tokens, want[:cut]) || res.done.Generated != cut {
			t.Errorf("got %v (%q, %d generated), want %v", res.tokens, res.done.FinishReason, res.done.Generated, want[:cut])
		}
	})
	t.Run("end of generation", func(t *testing.T) {
		e := newEngine(t, w, testConfig(), func(tok int32) bool { return tok == stop })
		res := run(t, e, Request{Prompt: prompt, MaxTokens: 16})
		if res.done.FinishReason != FinishStop || !slices.Equal(res.tokens, want[:cut]) {
			t.Errorf("got %v (%q), want %v", res.tokens, res.done.FinishReason, want[:cut])
		}
		res = run(t, e, Request{Prompt: prompt, MaxTokens: 16, IgnoreEOS: true})
		if res.done.FinishReason != FinishLength || !slices.Equal(res.tokens, want) {
			t.Errorf("ignoring EOS: got %v (%q), want %v", res.tokens, res.done.FinishReason, want)
		}
	})
}

func TestLogprobs(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	e := newEngine(t, w, testConfig(), nil)
	res := run(t, e, Request{Prompt: tokens(12, w.Vocab, 11), MaxTokens: 6, Logprobs: true, TopLogprobs: 5})
	for i, ev := range res.events {
		if len(ev.TopLogprobs) != 5 {
			t.Fatalf("token %d: %d alternatives", i, len(ev.TopLogprobs))
		}
		if ev.TopLogprobs[0].Token != ev.Token || ev.TopLogprobs[0].Logprob != ev.Logprob {
			t.Errorf("token %d: greedy pick %d (%v) is not the top alternative %+v", i, ev.Token, ev.Logprob, ev.TopLogprobs[0])
		}
		var mass float64
		for j, a := range ev.TopLogprobs {
			if a.Logprob > 0 || (j > 0 && a.Logprob > ev.TopLogprobs[j-1].Logprob) {
				t.Errorf("token %d: alternatives %+v not descending log-probabilities", i, ev.TopLogprobs)
			}
			mass += math.Exp(float64(a.Logprob))
		}
		if mass > 1+1e-5 {
			t.Errorf("token %d: top-5 probability mass %v > 1", i, mass)
		}
	}
}

// TestLogprobsBatched checks that a step's draws, sampled in parallel with
// one log-probability scratch each, give every sequence of a batch the
// tokens and log-probabilities it gets alone.
func TestLogprobsBatched(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	req := func(i int) Request {
		return Request{ID: fmt.Sprint(i), Prompt: tokens(6+5*i, w.Vocab, uint64(200+i)), MaxTokens: 8,
			Logprobs: true, TopLogprobs: 1 + i%3, Sampling: sample.Config{Temperature: 0.8, Seed: uint64(7 + i)}}
	}
	const n = 6
	alone := make([]result, n)
	for i := range alone {
		alone[i] = run(t, newEngine(t, w, testConfig(), nil), req(i))
	}
	e := newEngine(t, w, testConfig(), nil)
	var wg sync.WaitGroup
	got := make([]result, n)
	for i := range got {
		ch, err := e.Submit(context.Background(), req(i))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = collect(t, ch)
		}()
	}
	wg.Wait()
	for i := range got {
		if !slices.Equal(got[i].tokens, alone[i].tokens) {
			t.Fatalf("request %d: batched %v, alone %v", i, got[i].tokens, alone[i].tokens)
		}
		for j, ev := range got[i].events {
			a := alone[i].events[j]
			if ev.Logprob != a.Logprob || !slices.Equal(ev.TopLogprobs, a.TopLogprobs) {
				t.Errorf("request %d token %d: batched %v %+v, alone %v %+v", i, j, ev.Logprob, ev.TopLogprobs, a.Logprob, a.TopLogprobs)
			}
		}
	}
}

func TestEmbed(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	toks := tokens(70, w.Vocab, 12)
	// Reference: the runner's normed hidden states, averaged.
	pool := kernels.NewPool(1)
	defer pool.Close()
	r := model.NewRunner(w, pool, len(toks))
	c, err := kvcache.New(kvcache.Config{Layers: w.Layers, Ctx: w.Ctx, KVDim: w.KVDim(), Type: kernels.F16})
	if err != nil {
		t.Fatal(err)
	}
	b := model.Batch{Tokens: toks, Pos: make([]int32, len(toks)), Seqs: make([]*kvcache.Cache, len(toks))}
	for i := range toks {
		b.Pos[i], b.Seqs[i] = int32(i), c
	}
	h, err := r.ForwardHidden(context.Background(), &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, w.Dim)
	for d := range want {
		var s float64
		for i := range toks {
			s += float64(h[i*w.Dim+d])
		}
		want[d] = float32(s / float64(len(toks)))
	}
	e := newEngine(t, w, testConfig(), nil) // 64-token steps: two chunks
	got, err := e.Embed(context.Background(), toks)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Embed differs from the runner's pooled hidden states")
	}
	if st := e.Stats(); st.KVBlocksUsed != 0 {
		t.Errorf("%d blocks used after Embed", st.KVBlocksUsed)
	}
	if ph := e.Stats().Phases; ph[model.PhaseExperts] <= 0 || ph[model.PhaseLogits] <= 0 {
		t.Errorf("after Embed: phase times %v, want its passes timed (experts, final norm)", ph)
	}
	if _, err := e.Embed(context.Background(), nil); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("Embed(nil) = %v", err)
	}
}

// stepGate runs experts in process. Once held, each forward pass waits at
// its first layer for a token on steps (closed: no more waiting).
type stepGate struct {
	inner model.ExpertRunner
	held  atomic.Bool
	steps chan struct{}
}

func (g *stepGate) RunExperts(ctx context.Context, layer int, groups []model.ExpertGroup) error {
	if layer == 0 && g.held.Load() {
		<-g.steps
	}
	return g.inner.RunExperts(ctx, layer, groups)
}

// TestEmbedOverloadedKeepsCache: an embedding the pool cannot hold is
// refused without evicting the prefix cache's blocks first.
func TestEmbedOverloadedKeepsCache(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	pool := kernels.NewPool(2)
	defer pool.Close()
	cfg := testConfig()
	cfg.KVBlocks = w.Ctx/cfg.BlockSize + 2 // 18 blocks of 16
	gate := &stepGate{inner: &model.LocalExperts{W: w, Pool: pool}, steps: make(chan struct{})}
	e, err := New(cfg, w, pool, nil, WithExperts(gate))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	run(t, e, Request{Prompt: tokens(100, w.Vocab, 4), MaxTokens: 1}) // 6 full blocks cached
	before := e.Stats().KVBlocksCached
	if before == 0 {
		t.Fatal("nothing cached")
	}
	// A request holding 4 blocks, parked between its passes: free and
	// cached, 14 blocks are left for an embedding of a whole context (16).
	gate.held.Store(true)
	ch, err := e.Submit(context.Background(), Request{Prompt: tokens(60, w.Vocab, 9), MaxTokens: 150, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	for first := false; !first; { // passes until its first token
		select {
		case <-ch:
			first = true
		case gate.steps <- struct{}{}:
		}
	}
	// The embedding is offered to the scheduler beside the gate's next
	// pass, so it is taken between two passes, the request holding its
	// blocks throughout (offered from another goroutine, Embed could miss
	// the scheduler's next look between passes for all 150 of them).
	j := &embedJob{tokens: tokens(w.Ctx, w.Vocab, 5), out: make(chan embedResult, 1)}
	for sent := false; !sent; {
		select {
		case e.embedCh <- j:
			sent = true
		case gate.steps <- struct{}{}:
		}
	}
	close(gate.steps)
	err = (<-j.out).err
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("embedding %d tokens beside a running request: %v, want ErrOverloaded", w.Ctx, err)
	}
	if after := e.Stats().KVBlocksCached; after < before {
		t.Errorf("cached blocks %d → %d: the refused embedding evicted them", before, after)
	}
	for range ch {
	}
}

// gateExperts runs experts in process but, once armed, parks the scheduler
// inside a forward pass until released, so a test can act while a request is
// certainly mid-generation.
type gateExperts struct {
	inner   model.ExpertRunner
	armed   atomic.Bool
	skip    atomic.Int32 // armed, calls to let through first
	entered chan struct{}
	release chan struct{}
}

func (g *gateExperts) RunExperts(ctx context.Context, layer int, groups []model.ExpertGroup) error {
	if g.armed.Load() && g.skip.Add(-1) < 0 && g.armed.CompareAndSwap(true, false) {
		close(g.entered)
		<-g.release
	}
	return g.inner.RunExperts(ctx, layer, groups)
}

func TestCloseEndsRequests(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	pool := kernels.NewPool(1)
	defer pool.Close()
	gate := &gateExperts{inner: &model.LocalExperts{W: w, Pool: pool}, entered: make(chan struct{}), release: make(chan struct{})}
	e, err := New(testConfig(), w, pool, nil, WithExperts(gate))
	if err != nil {
		t.Fatal(err)
	}
	gate.armed.Store(true)
	ch, err := e.Submit(context.Background(), Request{Prompt: tokens(8, w.Vocab, 13), MaxTokens: 200})
	if err != nil {
		t.Fatal(err)
	}
	<-gate.entered // the scheduler is parked inside the request's first step
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	// Close marks the engine closed before it signals the scheduler; wait
	// for that, then let the step finish.
	for {
		if _, err := e.Submit(context.Background(), Request{Prompt: tokens(2, w.Vocab, 1), MaxTokens: 1}); errors.Is(err, ErrClosed) {
			break
		}
		runtime.Gosched()
	}
	close(gate.release)
	<-closed
	res := collect(t, ch)
	if res.done.FinishReason != FinishCancel || !errors.Is(res.done.Err, ErrClosed) {
		t.Errorf("after Close: %q %v", res.done.FinishReason, res.done.Err)
	}
	e.Close() // idempotent
}

// TestWeightsVersionEmptiesPrefixCache: when the weights version changes
// (a hot expert update), a repeated prompt is computed again instead of
// reusing keys and values of the old weights; InvalidatePrefixCache does the
// same on request.
func TestWeightsVersionEmptiesPrefixCache(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	var version atomic.Uint64
	e := newEngine(t, w, testConfig(), nil, WithWeightsVersion(version.Load))
	prompt := tokens(100, w.Vocab, 3)
	run(t, e, Request{Prompt: prompt, MaxTokens: 4})
	if r := run(t, e, Request{Prompt: prompt, MaxTokens: 4}); r.done.CachedTokens < 96 {
		t.Fatalf("same version: %d cached tokens, want ≥ 96", r.done.CachedTokens)
	}
	version.Store(7)
	if r := run(t, e, Request{Prompt: prompt, MaxTokens: 4}); r.done.CachedTokens != 0 {
		t.Fatalf("after a weights change: %d cached tokens, want 0", r.done.CachedTokens)
	}
	if r := run(t, e, Request{Prompt: prompt, MaxTokens: 4}); r.done.CachedTokens < 96 {
		t.Fatalf("cached again under the new version: %d tokens", r.done.CachedTokens)
	}
	e.InvalidatePrefixCache()
	if r := run(t, e, Request{Prompt: prompt, MaxTokens: 4}); r.done.CachedTokens != 0 {
		t.Fatalf("after InvalidatePrefixCache: %d cached tokens, want 0", r.done.CachedTokens)
	}
}

// flipDuringPass is an ExpertRunner whose weights change at the first
// layer of the first forward pass (outputs scaled) and change back at its
// last layer, the version moving on at each change (1 → 2 → 3).
type flipDuringPass struct {
	inner   model.ExpertRunner
	version *atomic.Uint64
	layers  int
	calls   int
}

func (f *flipDuringPass) RunExperts(ctx context.Context, layer int, groups []model.ExpertGroup) error {
	f.calls++
	if f.calls == 1 {
		f.version.Store(2)
	}
	err := f.inner.RunExperts(ctx, layer, groups)
	if f.calls <= f.layers {
		for _, g := range groups {
			for i := range g.Out {
				g.Out[i] *= 1.5
			}
		}
	}
	if f.calls == f.layers {
		f.version.Store(3) // the original weights again
	}
	return err
}

// TestWeightsChangeDuringPass: keys and values computed in a pass during
// which the weights changed (and changed back) never seed a later request.
func TestWeightsChangeDuringPass(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	pool := kernels.NewPool(2)
	defer pool.Close()
	var version atomic.Uint64
	version.Store(1)
	cfg := testConfig()
	cfg.PrefillChunk = 64
	e, err := New(cfg, w, pool, nil, WithExperts(&flipDuringPass{inner: &model.LocalExperts{W: w, Pool: pool}, version: &version, layers: w.Layers}), WithWeightsVersion(version.Load))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	prompt := tokens(60, w.Vocab, 3)
	run(t, e, Request{Prompt: prompt, MaxTokens: 2}) // its prompt's pass is the perturbed one
	r := run(t, e, Request{Prompt: prompt, MaxTokens: 8})
	if want := reference(t, w, prompt, 8, sample.Config{}); !slices.Equal(r.tokens, want) {
		t.Errorf("reused keys and values of the changed weights (%d cached tokens): %v, want %v", r.done.CachedTokens, r.tokens, want)
	}
}

// KVPoolBytes is the size of the pool New allocates: whole blocks within
// KVBytes, or KVBlocks blocks.
func TestKVPoolBytes(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	block := kvcache.BlockBytes(w.Layers, w.KVDim(), 16, kernels.F16)
	for _, tc := range []struct {
		name   string
		edit   func(*Config)
		blocks int
	}{
		{"bytes", func(c *Config) { c.KVBlocks, c.KVBytes = 0, 100*block+block/2 }, 100},
		{"blocks", func(c *Config) { c.KVBlocks = 40 }, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.edit(&cfg)
			if got, want := cfg.KVPoolBytes(w), int64(tc.blocks)*block; got != want {
				t.Errorf("KVPoolBytes = %d, want %d", got, want)
			}
			if got := newEngine(t, w, cfg, nil).Stats().KVBlocksTotal; got != tc.blocks {
				t.Errorf("engine allocated %d blocks, want %d", got, tc.blocks)
			}
		})
	}
}

// AutoKVBytes gives MaxRunning sequences of the context, at most
// AutoKVCap, at least one sequence; an engine accepts every size it gives
// (a pool of one sequence, at the smallest).
func TestAutoKVBytes(t *testing.T) {
	w := testWeights(t, "tiny", nil) // 256 positions of 256 bytes
	seq := func(c Config, ctx int) int64 {
		return int64((ctx+c.BlockSize-1)/c.BlockSize) * kvcache.BlockBytes(w.Layers, w.KVDim(), c.BlockSize, c.KVType)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want func(Config) int64
	}{
		{"running sequences", func(c *Config) { c.MaxRunning = 4 }, func(c Config) int64 { return 4 * seq(c, w.Ctx) }},
		{"shorter context", func(c *Config) { c.MaxRunning, c.Ctx = 4, 100 }, func(c Config) int64 { return 4 * seq(c, 100) }},
		{"context beyond the model's", func(c *Config) { c.MaxRunning, c.Ctx = 4, 10*w.Ctx }, func(c Config) int64 { return 4 * seq(c, w.Ctx) }},
		{"F32", func(c *Config) { c.MaxRunning, c.KVType = 3, kernels.F32 }, func(c Config) int64 { return 3 * seq(c, w.Ctx) }},
		{"capped", func(c *Config) { c.MaxRunning = 1 << 20 }, func(Config) int64 { return AutoKVCap }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.edit(&cfg)
			got, want := cfg.AutoKVBytes(w), tc.want(cfg)
			if got != want {
				t.Fatalf("AutoKVBytes = %d, want %d", got, want)
			}
			if got >= AutoKVCap {
				return // not allocated here
			}
			cfg.KVBlocks, cfg.KVBytes = 0, got
			if n := newEngine(t, w, cfg, nil).Stats().KVBlocksTotal; int64(n)*seq(cfg, cfg.BlockSize) != got {
				t.Errorf("engine allocated %d blocks, want %d bytes", n, got)
			}
		})
	}
	// One sequence beyond the cap: a pool of that one sequence, which the
	// engine accepts (a smaller one it refuses).
	big := *w
	big.Ctx = int(AutoKVCap/kvcache.BlockBytes(w.Layers, w.KVDim(), 1, kernels.F16)) + 1000
	cfg := testConfig()
	one := cfg.SequenceKVBytes(&big)
	if one <= AutoKVCap {
		t.Fatalf("a sequence of %d positions takes %d bytes, want more than the cap", big.Ctx, one)
	}
	if got := cfg.AutoKVBytes(&big); got != one {
		t.Errorf("AutoKVBytes of a %d-position context = %d, want one sequence, %d", big.Ctx, got, one)
	}
	cfg.KVBlocks, cfg.KVBytes = 0, one-1
	if _, err := New(cfg, &big, nil, nil); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), strconv.FormatInt(one, 10)+" bytes") {
		t.Errorf("a pool one byte short of a sequence: %v, want ErrInvalidConfig naming %d bytes", err, one)
	}
}

// TestPenaltiesMatchRunner: with presence and frequency penalties the
// engine reproduces the plain runner token for token (the runner's sampler
// told the prompt's length, as Submit tells the engine's).
func TestPenaltiesMatchRunner(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	prompt := tokens(37, w.Vocab, 1)
	for _, sc := range []sample.Config{
		{PresencePenalty: 2},
		{FrequencyPenalty: 2},
		{Temperature: 0.9, Seed: 42, PresencePenalty: 1.5},
	} {
		want := reference(t, w, prompt, 20, sc)
		e := newEngine(t, w, testConfig(), nil)
		got := run(t, e, Request{ID: "x", Prompt: prompt, MaxTokens: 20, Sampling: sc})
		if !slices.Equal(got.tokens, want) {
			t.Errorf("%+v:\nengine %v\nrunner %v", sc, got.tokens, want)
		}
	}
}

// rowCounter runs experts in process and counts the layers it is called
// for and the rows of layer 0's groups (each token's TopK rows).
type rowCounter struct {
	inner        model.ExpertRunner
	layers, rows atomic.Int64
}

func (c *rowCounter) RunExperts(ctx context.Context, layer int, groups []model.ExpertGroup) error {
	c.layers.Add(1)
	if layer == 0 {
		for _, g := range groups {
			c.rows.Add(int64(len(g.Rows)))
		}
	}
	return c.inner.RunExperts(ctx, layer, groups)
}

// TestWarm: a warm-up runs one full step (MaxBatchTokens tokens, here over
// two sequences of the context) through the experts it is given, or as
// many tokens as the free KV blocks hold,
// and leaves no trace: no step counted, no block held, the prefix cache as
// it was, and a request after it generates what it does on a fresh engine.
// What it allocates stays under Config.StepBytes (which also counts the
// runner's buffers, allocated by New).
func TestWarm(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	pool := kernels.NewPool(2)
	defer pool.Close()
	req := Request{Prompt: tokens(40, w.Vocab, 5), MaxTokens: 8, IgnoreEOS: true}
	cold := run(t, newEngine(t, w, testConfig(), nil), req)

	cfg := testConfig()
	cfg.MaxBatchTokens = 2 * w.Ctx // two sequences' worth of the 256-token context
	cfg.KVBlocks = 2*w.Ctx/cfg.BlockSize + 1
	engineRows := &rowCounter{inner: &model.LocalExperts{W: w, Pool: pool}}
	e, err := New(cfg, w, pool, nil, WithExperts(engineRows))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	warmRows := &rowCounter{inner: &model.LocalExperts{W: w, Pool: pool}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := e.Warm(context.Background(), warmRows); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got, want := warmRows.rows.Load(), int64(cfg.MaxBatchTokens*w.TopK); got != want || engineRows.rows.Load() != 0 {
		t.Errorf("warm-up: %d expert rows in layer 0 given to its runner (want %d, a full step), %d to the engine's", got, want, engineRows.rows.Load())
	}
	grew, est := int64(after.TotalAlloc-before.TotalAlloc), cfg.StepBytes(w, pool.Threads())
	if grew > est || grew < est/4 {
		t.Errorf("the warm-up allocated %d bytes; StepBytes estimates %d", grew, est)
	}
	if st := e.Stats(); st.Steps != 0 || st.KVBlocksUsed != 0 || st.KVBlocksCached != 0 {
		t.Errorf("after the warm-up: %d steps, %d blocks used, %d cached", st.Steps, st.KVBlocksUsed, st.KVBlocksCached)
	}
	if tot := e.phases.Total(); tot != 0 { // Warm's result came after its pass: no race
		t.Errorf("the warm-up counted %v of phase time", tot)
	}
	warm := run(t, e, req)
	if ph := e.Stats().Phases; ph[model.PhaseExperts] <= 0 || ph[model.PhaseLogits] <= 0 {
		t.Errorf("after a request: phase times %v, want the experts and logits timed", ph)
	}
	if !slices.Equal(warm.tokens, cold.tokens) {
		t.Errorf("after a warm-up: %v, fresh engine: %v", warm.tokens, cold.tokens)
	}
	// The request's full blocks stay cached: fewer than 32 are free now.
	cached := e.Stats().KVBlocksCached
	if cached == 0 {
		t.Fatal("the request left nothing cached")
	}
	warmRows.rows.Store(0)
	if err := e.Warm(context.Background(), warmRows); err != nil {
		t.Fatal(err)
	}
	if got, want := warmRows.rows.Load(), int64((cfg.KVBlocks-cached)*cfg.BlockSize*w.TopK); got != want {
		t.Errorf("warm-up with %d blocks cached: %d expert rows, want %d (the free blocks' tokens)", cached, got, want)
	}
	if st := e.Stats(); st.KVBlocksCached != cached {
		t.Errorf("the warm-up evicted: %d blocks cached, %d before", st.KVBlocksCached, cached)
	}
	e.Close()
	if err := e.Warm(context.Background(), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Warm after Close = %v, want ErrClosed", err)
	}
}

// TestWarmCancel: cancelling a warm-up mid-step (a server stopping) ends
// the step at its next layer, not after all of them, and the engine serves
// on.
func TestWarmCancel(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	pool := kernels.NewPool(2)
	defer pool.Close()
	e := newEngine(t, w, testConfig(), nil)
	rc := &rowCounter{inner: &model.LocalExperts{W: w, Pool: pool}}
	g := &gateExperts{inner: rc, entered: make(chan struct{}), release: make(chan struct{})}
	g.armed.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Warm(ctx, g) }()
	<-g.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Warm = %v, want context.Canceled", err)
	}
	close(g.release)
	run(t, e, Request{Prompt: tokens(10, w.Vocab, 3), MaxTokens: 2}) // waits for the warm-up step to end
	if n := rc.layers.Load(); n != 1 {
		t.Errorf("the cancelled warm-up ran %d layers of %d, want 1", n, w.Layers)
	}
}

// TestDrawsReleaseSequences: once a step's tokens are out, the engine keeps
// no draw pointing at a sequence, so an idle engine does not keep the last
// burst's sequences (their token lists and samplers) alive.
func TestDrawsReleaseSequences(t *testing.T) {
	w := testWeights(t, "tiny", nil)
	e := newEngine(t, w, testConfig(), nil)
	var chs []<-chan Event
	for i := range 8 {
		ch, err := e.Submit(context.Background(), Request{Prompt: tokens(6, w.Vocab, uint64(40+i)), MaxTokens: 4, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		chs = append(chs, ch)
	}
	for _, ch := range chs {
		collect(t, ch)
	}
	// Stats reads under the lock the step's end publishes with, after the
	// draws of its last step were handled.
	if st := e.Stats(); st.Running != 0 {
		t.Fatalf("%d still running", st.Running)
	}
	for i, d := range e.draws[:cap(e.draws)] {
		if d.s != nil {
			t.Fatalf("draw %d of the last step still points at a sequence", i)
		}
	}
}
