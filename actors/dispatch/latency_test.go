package dispatch

import (
	"testing"
	"time"
)

func TestLatencyHistogram(t *testing.T) {
	var d Dispatcher
	for _, us := range []int{10, 60, 60, 300, 2000, 400000} {
		d.lat.observe(time.Duration(us) * time.Microsecond)
	}
	l := d.Latency()
	if l.Count != 6 {
		t.Fatalf("count %d, want 6", l.Count)
	}
	for bound, want := range map[float64]uint64{50e-6: 1, 100e-6: 3, 500e-6: 4, 2.5e-3: 5, 250e-3: 5} {
		if got := l.Buckets[bound]; got != want {
			t.Errorf("≤ %gs: %d, want %d (cumulative)", bound, got, want)
		}
	}
	if want := 402430 * time.Microsecond; l.Sum != want {
		t.Errorf("sum %v, want %v", l.Sum, want)
	}
}
