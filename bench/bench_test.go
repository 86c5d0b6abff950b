package bench

import (
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/bench/llamacpp"
	"github.com/conclave-ai/conclave/bench/membw"
)

// fakeEngine records calls; its logits make the next greedy token the
// previous one plus one.
type fakeEngine struct {
	vocab    int
	seq      []int32 // tokens since the last Reset
	resets   int
	prefills [][]int32
	decodes  int
	logits   []float32
	failAt   int // fail the failAt-th Decode (1-based); 0 never
}

func (f *fakeEngine) Reset() { f.seq, f.resets = f.seq[:0], f.resets+1 }

func (f *fakeEngine) next() []float32 {
	clear(f.logits)
	f.logits[(int(f.seq[len(f.seq)-1])+1)%f.vocab] = 1
	return f.logits
}

func (f *fakeEngine) Prefill(_ context.Context, tokens []int32) ([]float32, error) {
	f.prefills = append(f.prefills, slices.Clone(tokens))
	f.seq = append(f.seq, tokens...)
	return f.next(), nil
}

var errFake = errors.New("fake failure")

func (f *fakeEngine) Decode(_ context.Context, token int32) ([]float32, error) {
	f.decodes++
	if f.decodes == f.failAt {
		return nil, errFake
	}
	f.seq = append(f.seq, token)
	return f.next(), nil
}

func TestRunDrivesEngine(t *testing.T) {
	f := &fakeEngine{vocab: 50, logits: make([]float32, 50)}
	cfg := Config{Prompts: []int{3, 60}, Gen: 5, Reps: 2, Warmup: true, Vocab: 50}
	tm, err := Run(context.Background(), f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// warmup: prefill of min(32, 3) + 1 decode; 2 × (pp3, pp60); 2 × tg5.
	if want := 1 + 2 + 2 + 2; f.resets != want {
		t.Errorf("%d resets, want %d", f.resets, want)
	}
	if want := 1 + 2*5; f.decodes != want {
		t.Errorf("%d decodes, want %d", f.decodes, want)
	}
	var lens []int
	for _, p := range f.prefills {
		lens = append(lens, len(p))
	}
	if want := []int{3, 3, 3, 60, 60}; !slices.Equal(lens, want) {
		t.Errorf("prefill lengths %v, want %v", lens, want)
	}
	// The last sequence is a tg run: token 1, then greedy continuations.
	if want := []int32{1, 2, 3, 4, 5}; !slices.Equal(f.seq, want) {
		t.Errorf("decoded sequence %v, want %v", f.seq, want)
	}
	if len(tm.Prefill) != 2 || tm.Prefill[0].Name != "pp3" || tm.Prefill[1].Name != "pp60" || tm.Decode == nil || tm.Decode.Name != "tg5" {
		t.Fatalf("timings %+v", tm)
	}
	for _, x := range append(slices.Clone(tm.Prefill), *tm.Decode) {
		if len(x.Samples) != 2 || !(x.TokensPerSec > 0) {
			t.Errorf("%s: %d samples, %v tok/s", x.Name, len(x.Samples), x.TokensPerSec)
		}
	}
}

func TestRunErrors(t *testing.T) {
	f := &fakeEngine{vocab: 10, logits: make([]float32, 10), failAt: 3}
	_, err := Run(context.Background(), f, Config{Gen: 4, Reps: 1, Vocab: 10})
	if !errors.Is(err, errFake) || !strings.Contains(err.Error(), "tg4") {
		t.Fatalf("Run = %v, want the engine's error naming tg4", err)
	}
	for name, c := range map[string]Config{
		"nothing":    {Reps: 1, Vocab: 10},
		"zero-len":   {Prompts: []int{0}, Reps: 1, Vocab: 10},
		"negative":   {Gen: -1, Reps: 1, Vocab: 10},
		"no-reps":    {Gen: 1, Vocab: 10},
		"tiny-vocab": {Gen: 1, Reps: 1, Vocab: 1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Run(context.Background(), f, c); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Run(%+v) = %v, want ErrInvalidConfig", c, err)
			}
		})
	}
}

func TestPromptTokensAndArgmax(t *testing.T) {
	if got, want := PromptTokens(7, 4), []int32{1, 2, 3, 1, 2, 3, 1}; !slices.Equal(got, want) {
		t.Errorf("PromptTokens = %v, want %v", got, want)
	}
	if got := Argmax([]float32{0, 3, -1, 3, 2}); got != 1 {
		t.Errorf("Argmax = %d, want 1 (first of ties)", got)
	}
}

func TestMeanStddev(t *testing.T) {
	for _, tc := range []struct {
		xs       []float64
		mean, sd float64
	}{
		{nil, 0, 0},
		{[]float64{5}, 5, 0},
		{[]float64{2, 4, 4, 4, 5, 5, 7, 9}, 5, math.Sqrt(32.0 / 7)},
	} {
		m, s := meanStddev(tc.xs)
		if math.Abs(m-tc.mean) > 1e-12 || math.Abs(s-tc.sd) > 1e-12 {
			t.Errorf("meanStddev(%v) = %v, %v; want %v, %v", tc.xs, m, s, tc.mean, tc.sd)
		}
	}
}

func TestFLOPCount(t *testing.T) {
	f := FLOPCount{PerToken: 100, Output: 1000, PerPair: 10}
	// 4 tokens: 4·100 + 1000 + 10·(1+2+3+4)
	if got := f.Prefill(4); got != 1500 {
		t.Errorf("Prefill(4) = %v, want 1500", got)
	}
}

func sampleReport() Report {
	info := ModelInfo{Path: "m.gguf", Desc: "llama dim=8", WeightType: "Q8_0", FileBytes: 1000, BytesPerToken: 2e8,
		FLOPs: FLOPCount{PerToken: 1e9, PerPair: 0}}
	r := NewReport(info, Timings{
		Prefill: []Test{{Name: "pp256", Tokens: 256, TokensPerSec: 50, StddevTs: 1}, {Name: "pp512", Tokens: 512, TokensPerSec: 40}},
		Decode:  &Test{Name: "tg128", Tokens: 128, TokensPerSec: 10, StddevTs: 0.5},
	})
	r.Threads, r.KVType, r.Batch, r.Reps, r.KVCacheBytes = 2, "f16", 512, 2, 1000
	return r
}

func TestReportDerived(t *testing.T) {
	r := sampleReport()
	if g := r.Prefill[0].GFLOPs; math.Abs(g-50) > 1e-9 { // 1 GFLOP/token × 50 tok/s
		t.Errorf("pp256 GFLOP/s = %v, want 50", g)
	}
	if g := r.Decode.BandwidthGBs; math.Abs(g-2) > 1e-9 { // 0.2 GB/token × 10 tok/s
		t.Errorf("tg128 bandwidth = %v GB/s, want 2", g)
	}
	// The flat headline fields: pp of the longest prompt, tg, sizes.
	if r.PPTokS != 40 || r.TGTokS != 10 || r.ModelBytes != 1000 || r.ActiveBytesPerToken != 2e8 {
		t.Errorf("pp_tok_s %v tg_tok_s %v model_bytes %v active_bytes_per_token %v; want 40 10 1000 2e8",
			r.PPTokS, r.TGTokS, r.ModelBytes, r.ActiveBytesPerToken)
	}
	r.SetRSS(3000)
	if r.RSSRatio != 1.5 {
		t.Errorf("RSS ratio = %v, want 1.5", r.RSSRatio)
	}
	r.SetMemBandwidth(membw.Result{BestGBs: 8, Threads: 2, Reps: 3, ArrayBytes: 1 << 20})
	if r.MemBandwidthGBs != 8 || r.Decode.OfMemBandwidth != 0.25 {
		t.Errorf("mem bandwidth %v, decode fraction %v; want 8, 0.25", r.MemBandwidthGBs, r.Decode.OfMemBandwidth)
	}
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pp256", "50.00", "tg128", "2.00", "triad 8.00 GB/s", "25%", "1.50 ×"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestStatusField(t *testing.T) {
	text := "Name:\tconclave\nVmPeak:\t  123 kB\nVmHWM:\t    4096 kB\nThreads:\t5\n"
	if n, ok := membw.StatusField(text, "VmHWM"); !ok || n != 4096*1024 {
		t.Errorf("VmHWM = %d, %v", n, ok)
	}
	if n, ok := membw.StatusField(text, "Threads"); !ok || n != 5 {
		t.Errorf("Threads = %d, %v", n, ok)
	}
	if _, ok := membw.StatusField(text, "VmRSS"); ok {
		t.Error("found a missing key")
	}
	if _, ok := membw.StatusField("VmHWM: lots kB\n", "VmHWM"); ok {
		t.Error("parsed a non-number")
	}
}

func TestPeakRSSOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc/self/status here")
	}
	before, ok := PeakRSS()
	if !ok || before <= 0 {
		t.Fatalf("PeakRSS = %d, %v", before, ok)
	}
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	after, _ := PeakRSS()
	if after < before+32<<20 {
		t.Errorf("peak RSS went from %d to %d after touching 64 MiB", before, after)
	}
	_ = buf[len(buf)-1]
}

func TestCompare(t *testing.T) {
	r := sampleReport()
	r.SetMemBandwidth(membw.Result{BestGBs: 8, Threads: 2, Reps: 1})
	ref := []llamacpp.Result{
		{NPrompt: 512, TokensPerSec: 400, StddevTs: 3, Threads: 2, TypeK: "f16", TypeV: "f16", BuildCommit: "abc", ModelType: "llama Q8_0"},
		{NGen: 128, TokensPerSec: 20, Threads: 4, TypeK: "f16", TypeV: "f16"},
		{NPrompt: 1024, TokensPerSec: 300, Threads: 2, TypeK: "f16"},
		{NPrompt: 512, NDepth: 512, TokensPerSec: 1, Threads: 2, TypeK: "f16"}, // depth runs are not compared
	}
	c := Compare(r, ref)
	if len(c.Rows) != 2 {
		t.Fatalf("rows %+v, want pp512 and tg128", c.Rows)
	}
	if c.Rows[0].Name != "pp512" || c.Rows[0].Ratio != 0.1 || c.Rows[1].Name != "tg128" || c.Rows[1].Ratio != 0.5 {
		t.Errorf("rows %+v", c.Rows)
	}
	if c.OursGBs != 2 || c.TheirGBs != 4 || c.MemGBs != 8 {
		t.Errorf("bandwidths %v %v %v, want 2 4 8", c.OursGBs, c.TheirGBs, c.MemGBs)
	}
	wantMissing := []string{"pp256: no llama.cpp result", "pp1024: no conclave result"}
	if !slices.Equal(c.Missing, wantMissing) {
		t.Errorf("missing %q, want %q", c.Missing, wantMissing)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "threads differ") {
		t.Errorf("warnings %q, want one about threads", c.Warnings)
	}
	var b strings.Builder
	if err := c.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"llama.cpp abc", "pp512", "0.100", "tg128", "0.500", "triad 8.00 GB/s (25% / 50%)", "not compared: pp256", "warning: threads differ"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{Bytes(512), "512 B"}, {Bytes(1536), "1.5 KiB"}, {Bytes(685681472), "653.9 MiB"},
		{Count(999), "999"}, {Count(1500), "1.5 k"}, {Count(2_500_000), "2.5 M"}, {Count(1_230_000_000), "1.23 G"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestCPULine(t *testing.T) {
	busy, total, ok := cpuLine("cpu  100 5 20 800 50 1 2 3 7 0")
	if !ok || busy != 131 || total != 981 {
		t.Errorf("cpuLine = %v, %v, %v; want 131, 981, true", busy, total, ok)
	}
	if _, _, ok := cpuLine("cpu0 1 2 3 4 5"); ok {
		t.Error("parsed a per-CPU line as the aggregate")
	}
	if n, ok := BusyCPUs(10 * time.Millisecond); ok && (n < 0 || n > float64(runtime.NumCPU())+0.01) {
		t.Errorf("BusyCPUs = %v", n)
	}
}

func TestSummarizeMedians(t *testing.T) {
	pair := func(pp, tg float64) Comparison {
		return Comparison{Rows: []Row{
			{Name: "pp512", Ours: pp, Theirs: 100, Ratio: pp / 100},
			{Name: "tg128", Ours: tg, Theirs: 20, Ratio: tg / 20},
		}, OursGBs: tg / 10, TheirGBs: 2}
	}
	s := Summarize([]Comparison{pair(90, 30), pair(150, 10), pair(110, 20)})
	if s.Pairs != 3 || len(s.Rows) != 2 {
		t.Fatalf("summary %+v", s)
	}
	if s.Rows[0].Name != "pp512" || s.Rows[0].Median != 1.1 || s.Rows[0].OursMedian != 110 {
		t.Errorf("pp512 row %+v, want median ratio 1.1", s.Rows[0])
	}
	if s.Rows[1].Median != 1 || len(s.Rows[1].Ratios) != 3 || s.Rows[1].Ratios[0] != 1.5 {
		t.Errorf("tg128 row %+v, want median 1 and ratios in run order", s.Rows[1])
	}
	if s.OursGBs != 2 {
		t.Errorf("ours GB/s median %v, want 2", s.OursGBs)
	}
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{4, 1}, 2.5}, {[]float64{5, 1, 3}, 3}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	var b strings.Builder
	if err := s.WriteTable(&b); err != nil || !strings.Contains(b.String(), "1.10×") {
		t.Errorf("table %q, err %v", b.String(), err)
	}
}
