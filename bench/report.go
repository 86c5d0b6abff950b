package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/conclave-ai/conclave/bench/membw"
	"github.com/conclave-ai/conclave/model"
)

// ModelInfo describes the model a report is about.
type ModelInfo struct {
	Path          string    `json:"path"`
	Desc          string    `json:"desc"`        // model.Weights.String()
	WeightType    string    `json:"weight_type"` // the most common tensor type, e.g. Q8_0
	FileBytes     int64     `json:"file_bytes"`
	ParamsTotal   int64     `json:"params_total"`
	ParamsActive  int64     `json:"params_active"`   // per decoded token (model.Weights.Params)
	BytesPerToken int64     `json:"bytes_per_token"` // weight bytes streamed per decoded token
	FLOPs         FLOPCount `json:"flops"`
}

// DescribeModel fills ModelInfo from bound weights and the file's size.
func DescribeModel(path string, fileBytes int64, w *model.Weights) ModelInfo {
	total, active := w.Params()
	return ModelInfo{
		Path: path, Desc: w.String(), WeightType: dominantType(w.TensorTypes()),
		FileBytes: fileBytes, ParamsTotal: total, ParamsActive: active,
		BytesPerToken: w.BytesPerToken(), FLOPs: FLOPs(w),
	}
}

func dominantType(m map[string]int) string {
	best, n := "", -1
	for t, c := range m {
		if c > n || (c == n && t < best) {
			best, n = t, c
		}
	}
	return best
}

// PrefillResult is a ppN test with what it achieved.
type PrefillResult struct {
	Test
	GFLOPs float64 `json:"gflops"` // FLOPCount.Prefill(N) × tokens/s / N, in 1e9/s
	// OfPeak is GFLOPs over the compute peak of the weights' arithmetic
	// (int8 for quantized weights, fp32 for float ones), when measured.
	OfPeak float64 `json:"of_peak,omitempty"`
}

// DecodeResult is the tgN test with what it achieved.
type DecodeResult struct {
	Test
	// BandwidthGBs is BytesPerToken × tokens/s in 1e9 bytes/s: the weight
	// traffic decoding implies (the KV cache and activations are left out).
	BandwidthGBs float64 `json:"bandwidth_gbs"`
	// OfMemBandwidth is BandwidthGBs / the triad's, when it was measured.
	OfMemBandwidth float64 `json:"of_mem_bandwidth,omitempty"`
}

// Report is the result of `conclave bench model`.
type Report struct {
	Model        ModelInfo       `json:"model"`
	Threads      int             `json:"threads"`
	Batch        int             `json:"batch"` // rows per forward pass (prefill chunk)
	KVType       string          `json:"kv_type"`
	KVCacheBytes int64           `json:"kv_cache_bytes"`
	Reps         int             `json:"reps"`
	Prefill      []PrefillResult `json:"prefill"`
	Decode       *DecodeResult   `json:"decode,omitempty"`
	// PeakRSSBytes is the process's VmHWM after the model tests (before the
	// bandwidth measurement allocates its arrays); 0 where unknown. The
	// mmapped weights count once they are paged in.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	// RSSRatio is PeakRSSBytes / (file size + KV cache bytes): near 1 when
	// nothing but the weights and the cache is resident.
	RSSRatio float64 `json:"rss_ratio"`
	// MemBandwidthGBs is the best triad bandwidth with the same threads; 0
	// when not measured.
	MemBandwidthGBs float64       `json:"mem_bandwidth_gbs"`
	MemBW           *membw.Result `json:"membw,omitempty"`
	// Peak is the measured int8/fp32 compute ceiling (MeasurePeak).
	Peak *PeakResult `json:"compute_peak,omitempty"`
	// BusyCPUs is how many CPUs other work kept busy in the quarter second
	// before the tests started (Linux; -1 when unknown). Above about 0.2
	// something else was running and the numbers are noisy.
	BusyCPUs float64 `json:"busy_cpus_before"`

	// The headline numbers, flat for scripts: prompt processing tok/s of
	// the longest prompt tested, decode tok/s, the model file's size and
	// the weight bytes streamed per decoded token.
	PPTokS              float64 `json:"pp_tok_s"`
	TGTokS              float64 `json:"tg_tok_s"`
	ModelBytes          int64   `json:"model_bytes"`
	ActiveBytesPerToken int64   `json:"active_bytes_per_token"`
}

// NewReport derives the achieved rates from raw timings.
func NewReport(info ModelInfo, tm Timings) Report {
	r := Report{Model: info, ModelBytes: info.FileBytes, ActiveBytesPerToken: info.BytesPerToken}
	longest := 0
	for _, t := range tm.Prefill {
		if t.Tokens >= longest {
			longest, r.PPTokS = t.Tokens, t.TokensPerSec
		}
		r.Prefill = append(r.Prefill, PrefillResult{
			Test:   t,
			GFLOPs: info.FLOPs.Prefill(t.Tokens) / float64(t.Tokens) * t.TokensPerSec / 1e9,
		})
	}
	if tm.Decode != nil {
		r.TGTokS = tm.Decode.TokensPerSec
		r.Decode = &DecodeResult{Test: *tm.Decode, BandwidthGBs: float64(info.BytesPerToken) * tm.Decode.TokensPerSec / 1e9}
	}
	return r
}

// SetRSS records the peak resident set size and its ratio to the file and
// the KV cache.
func (r *Report) SetRSS(peak int64) {
	r.PeakRSSBytes = peak
	if d := r.Model.FileBytes + r.KVCacheBytes; d > 0 && peak > 0 {
		r.RSSRatio = float64(peak) / float64(d)
	}
}

// SetMemBandwidth records a triad measurement.
func (r *Report) SetMemBandwidth(m membw.Result) {
	r.MemBW = &m
	r.MemBandwidthGBs = m.BestGBs
	if r.Decode != nil && m.BestGBs > 0 {
		r.Decode.OfMemBandwidth = r.Decode.BandwidthGBs / m.BestGBs
	}
}

// SetPeak records a compute-peak measurement and each prefill's share of
// the peak its arithmetic runs on: int8 (VNNI) when the weights are
// quantized, so activations are quantized to 8 bits too, else fp32.
func (r *Report) SetPeak(p PeakResult) {
	r.Peak = &p
	peak := p.Int8GOPS
	switch r.Model.WeightType {
	case "F32", "F16", "BF16":
		peak = p.FP32GFLOPS
	}
	for i := range r.Prefill {
		if peak > 0 {
			r.Prefill[i].OfPeak = r.Prefill[i].GFLOPs / peak
		}
	}
}

// BusyCPUs samples /proc/stat over d and returns how many CPUs were busy on
// average (all non-idle, non-iowait time); ok is false where it cannot be read.
func BusyCPUs(d time.Duration) (float64, bool) {
	read := func() (busy, total float64, ok bool) {
		data, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, false
		}
		line, _, _ := strings.Cut(string(data), "\n")
		return cpuLine(line)
	}
	b0, t0, ok0 := read()
	time.Sleep(d)
	b1, t1, ok1 := read()
	if !ok0 || !ok1 || t1 <= t0 {
		return 0, false
	}
	return (b1 - b0) / (t1 - t0) * float64(runtime.NumCPU()), true
}

// cpuLine parses the aggregate "cpu  user nice system idle iowait irq
// softirq steal ..." line of /proc/stat into busy and total ticks.
func cpuLine(line string) (busy, total float64, ok bool) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, x := range f[1:] {
		if i >= 8 { // guest times are already counted in user and nice
			break
		}
		v, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return 0, 0, false
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, true
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	m := r.Model
	fmt.Fprintf(w, "model   %s\n        %s, %s, %s file, %s params (%s active/token), %s weights/token\n",
		m.Path, m.Desc, m.WeightType, Bytes(m.FileBytes), Count(m.ParamsTotal), Count(m.ParamsActive), Bytes(m.BytesPerToken))
	fmt.Fprintf(w, "run     %d threads, batch %d, KV %s (%s), %d reps\n", r.Threads, r.Batch, r.KVType, Bytes(r.KVCacheBytes), r.Reps)
	if r.BusyCPUs >= 0.2 {
		fmt.Fprintf(w, "warning: other work kept %.1f CPUs busy just before the tests; expect noisy numbers\n", r.BusyCPUs)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "test\ttok/s\t±\tGFLOP/s\tGB/s\t")
	for _, p := range r.Prefill {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.1f\t\t\n", p.Name, p.TokensPerSec, p.StddevTs, p.GFLOPs)
	}
	if d := r.Decode; d != nil {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t\t%.2f\t\n", d.Name, d.TokensPerSec, d.StddevTs, d.BandwidthGBs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if r.MemBandwidthGBs > 0 {
		fmt.Fprintf(w, "memory  triad %.2f GB/s (best of %d, %d threads, 3 × %s)", r.MemBandwidthGBs, r.MemBW.Reps, r.MemBW.Threads, Bytes(r.MemBW.ArrayBytes))
		if r.Decode != nil {
			fmt.Fprintf(w, "; decode reaches %.0f%% of it", 100*r.Decode.OfMemBandwidth)
		}
		fmt.Fprintln(w)
	}
	if p := r.Peak; p != nil {
		fmt.Fprintf(w, "compute peak %.0f int8 GOPS, %.0f fp32 GFLOP/s (%d threads, register-only loops)", p.Int8GOPS, p.FP32GFLOPS, p.Threads)
		for _, pr := range r.Prefill {
			if pr.OfPeak > 0 {
				fmt.Fprintf(w, "; %s reaches %.0f%%", pr.Name, 100*pr.OfPeak)
			}
		}
		fmt.Fprintln(w)
	}
	if r.PeakRSSBytes > 0 {
		fmt.Fprintf(w, "rss     peak %s = %.2f × (file %s + KV %s)\n", Bytes(r.PeakRSSBytes), r.RSSRatio, Bytes(m.FileBytes), Bytes(r.KVCacheBytes))
	}
	_, err := fmt.Fprint(w, "GFLOP/s counts 2 × (attention, gate, routed-expert weights) per token + the output projection once + attention scores and sums\n")
	return err
}

// PeakRSS reads the process's peak resident set size (VmHWM in
// /proc/self/status, Linux) in bytes; ok is false where it cannot be read.
func PeakRSS() (n int64, ok bool) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	return membw.StatusField(string(data), "VmHWM")
}

// Bytes formats a byte count with a binary unit: 686.0 MiB.
func Bytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// Count formats a count with a decimal unit: 1.23 G.
func Count(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f G", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f k", float64(n)/1e3)
	}
	return strconv.FormatInt(n, 10)
}
