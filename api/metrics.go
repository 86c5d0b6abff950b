package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/model"
)

// Prometheus metrics, named as vLLM names them with the prefix
// "conclave:" (so vLLM dashboards work with the prefix changed). Every
// metric of the API and its engine carries the model_name label; the
// node's Raft, membership and expert metrics (package cluster) do not.

// Histogram buckets in seconds (vLLM's).
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}
	tpotBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}
	e2eBuckets  = []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680}
)

type metrics struct {
	ttft, tpot, e2e prometheus.Histogram
	success         *prometheus.CounterVec // finished_reason
	httpRequests    *prometheus.CounterVec // route, code
	// forwardedRequests counts what a session's home served for the node
	// a client reached, which counts it in httpRequests: summed over
	// nodes, httpRequests is the clients' requests.
	forwardedRequests *prometheus.CounterVec // route, code
	// generated counts the tokens requests returned (their usage's
	// completion_tokens). The engine samples a few more when a stop string
	// ends a request: the API sees it a token or more after the engine
	// sampled them (engine_generated_tokens_total counts those too).
	generated prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, modelID string, eng Engine) *metrics {
	labels := prometheus.Labels{"model_name": modelID}
	m := &metrics{
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conclave:time_to_first_token_seconds", Help: "Time from request arrival to the first generated token, in seconds.",
			Buckets: ttftBuckets, ConstLabels: labels}),
		tpot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conclave:time_per_output_token_seconds", Help: "Mean time between generated tokens after the first, per request, in seconds.",
			Buckets: tpotBuckets, ConstLabels: labels}),
		e2e: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conclave:e2e_request_latency_seconds", Help: "Time from request arrival to the last byte of the response, in seconds.",
			Buckets: e2eBuckets, ConstLabels: labels}),
		success: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conclave:request_success_total", Help: "Generation requests that finished, by finish reason.",
			ConstLabels: labels}, []string{"finished_reason"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conclave:http_requests_total", Help: "HTTP requests answered by the API, by route and status code.",
			ConstLabels: labels}, []string{"route", "code"}),
		forwardedRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conclave:forwarded_requests_total", Help: "Requests another node forwarded here (this node being the session's home), by route and status code; the node the client reached counts them in http_requests_total.",
			ConstLabels: labels}, []string{"route", "code"}),
		generated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conclave:generation_tokens_total", Help: "Tokens generated for requests: the sum of their usage's completion_tokens.",
			ConstLabels: labels}),
	}
	reg.MustRegister(m.ttft, m.tpot, m.e2e, m.success, m.httpRequests, m.forwardedRequests, m.generated, newStatsCollector(eng, labels))
	return m
}

// observe records one finished generation.
func (m *metrics) observe(start, first, end time.Time, generated int, finish string) {
	if !first.IsZero() {
		m.ttft.Observe(first.Sub(start).Seconds())
		if generated > 1 {
			m.tpot.Observe(end.Sub(first).Seconds() / float64(generated-1))
		}
	}
	m.e2e.Observe(end.Sub(start).Seconds())
	m.success.WithLabelValues(finish).Inc()
	m.generated.Add(float64(generated))
}

// statsCollector reads engine.Stats at scrape time.
type statsCollector struct {
	eng                                    Engine
	running, waiting, kvUsage              *prometheus.Desc
	prefixHits, prefixQueries, prompt, gen *prometheus.Desc
	stepTokens, stepSeconds                *prometheus.Desc
	preemptions, evictions, kvCached       *prometheus.Desc
	phase                                  *prometheus.Desc
}

func newStatsCollector(eng Engine, labels prometheus.Labels) *statsCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("conclave:"+name, help, nil, labels)
	}
	return &statsCollector{
		eng:           eng,
		running:       d("num_requests_running", "Sequences in the running batch."),
		waiting:       d("num_requests_waiting", "Requests waiting for admission."),
		kvUsage:       d("kv_cache_usage_perc", "Fraction of KV cache blocks in use, 0 to 1."),
		prefixHits:    d("prefix_cache_hits_total", "Prompt tokens served from the prefix cache."),
		prefixQueries: d("prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache."),
		prompt:        d("prompt_tokens_total", "Prompt tokens of requests whose prompt was processed (prefix-cache hits included)."),
		gen:           d("engine_generated_tokens_total", "Tokens the engine sampled, with those after a stop string that the API cut off."),
		stepTokens:    d("iteration_tokens_total", "Tokens (batch rows) per engine step."),
		stepSeconds:   d("engine_step_duration_seconds", "Duration of an engine step: its forward pass and sampling, in seconds."),
		preemptions:   d("num_preemptions_total", "Running sequences sent back to the queue for lack of KV blocks."),
		evictions:     d("kv_cache_evictions_total", "Cached prefix blocks evicted to make room."),
		kvCached:      d("kv_cache_cached_blocks", "Unreferenced KV blocks kept for the prefix cache (evictable)."),
		phase: prometheus.NewDesc("conclave:engine_phase_seconds_total",
			"Wall time of each part of the engine's forward passes (experts: computing or waiting for a layer's experts, local or remote, or a dense model's FFN), in seconds.",
			[]string{"phase"}, labels),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.running, c.waiting, c.kvUsage, c.prefixHits, c.prefixQueries, c.prompt, c.gen, c.stepTokens, c.stepSeconds,
		c.preemptions, c.evictions, c.kvCached, c.phase} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.eng.Stats()
	usage := 0.0
	if s.KVBlocksTotal > 0 {
		usage = float64(s.KVBlocksUsed) / float64(s.KVBlocksTotal)
	}
	ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(s.Running))
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(s.Waiting))
	ch <- prometheus.MustNewConstMetric(c.kvUsage, prometheus.GaugeValue, usage)
	ch <- prometheus.MustNewConstMetric(c.prefixHits, prometheus.CounterValue, float64(s.PrefixHits))
	ch <- prometheus.MustNewConstMetric(c.prefixQueries, prometheus.CounterValue, float64(s.PrefixLookups))
	ch <- prometheus.MustNewConstMetric(c.prompt, prometheus.CounterValue, float64(s.PromptTokens))
	ch <- prometheus.MustNewConstMetric(c.gen, prometheus.CounterValue, float64(s.GeneratedTokens))
	ch <- prometheus.MustNewConstHistogram(c.stepTokens, s.StepTokens.Count(), s.StepTokens.Sum, s.StepTokens.Cumulative(engine.StepTokensBounds))
	ch <- prometheus.MustNewConstMetric(c.preemptions, prometheus.CounterValue, float64(s.Preemptions))
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(s.Evictions))
	ch <- prometheus.MustNewConstMetric(c.kvCached, prometheus.GaugeValue, float64(s.KVBlocksCached))
	ch <- prometheus.MustNewConstHistogram(c.stepSeconds, s.StepSeconds.Count(), s.StepSeconds.Sum, s.StepSeconds.Cumulative(engine.StepSecondsBounds))
	for p, d := range s.Phases {
		ch <- prometheus.MustNewConstMetric(c.phase, prometheus.CounterValue, d.Seconds(), model.Phase(p).String())
	}
}
