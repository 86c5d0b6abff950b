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

// TestLatencyBuckets: a layer slow enough to have timed out and retried
// (the default call timeout is 2 s) lands in a bucket, not only in +Inf.
func TestLatencyBuckets(t *testing.T) {
	var d Dispatcher
	for _, v := range []time.Duration{30 * time.Microsecond, 3 * time.Millisecond, 3 * time.Second, time.Minute} {
		d.lat.observe(v)
	}
	l := d.Latency()
	if l.Count != 4 || l.Buckets[50e-6] != 1 || l.Buckets[5e-3] != 2 || l.Buckets[2.5] != 2 || l.Buckets[5] != 3 || l.Buckets[10] != 3 {
		t.Errorf("buckets %v, count %d", l.Buckets, l.Count)
	}
}
