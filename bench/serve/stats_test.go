package serve

import (
	"math"
	"testing"
)

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sorted []float64
		p      float64
		want   float64
	}{
		{"one", []float64{5}, 99, 5},
		{"two p50", []float64{1, 3}, 50, 2},
		{"min", []float64{1, 2, 3, 4}, 0, 1},
		{"max", []float64{1, 2, 3, 4}, 100, 4},
		// numpy.percentile([1..10], 90) = 9.1, (…, 99) = 9.91, (…, 50) = 5.5
		{"p90 of 1..10", seq(10), 90, 9.1},
		{"p99 of 1..10", seq(10), 99, 9.91},
		{"p50 of 1..10", seq(10), 50, 5.5},
		{"p99 of 1..100", seq(100), 99, 99.01},
		{"clamped", []float64{1, 2}, 150, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("the percentile of nothing should be NaN")
	}
}

func seq(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(i + 1)
	}
	return s
}

func TestSummarize(t *testing.T) {
	xs := []float64{4, 1, 3, 2}
	s := Summarize(xs)
	want := Summary{N: 4, Mean: 2.5, P50: 2.5, P90: 3.7, P99: 3.97, Min: 1, Max: 4}
	if math.Abs(s.P90-want.P90) > 1e-9 || math.Abs(s.P99-want.P99) > 1e-9 {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	s.P90, s.P99 = want.P90, want.P99
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if xs[0] != 4 {
		t.Error("Summarize sorted its input")
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("an empty sample should summarize to zero")
	}
}
