package expert

import (
	"errors"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/router"
)

func TestFaults(t *testing.T) {
	var none *Faults
	none.before(router.ExpertID{}) // a nil *Faults injects nothing

	var f Faults
	id := router.ExpertID{Layer: 1, Index: 3}
	for _, d := range []time.Duration{-time.Millisecond, MaxFaultDelay + 1} {
		if err := f.Set(id, d); !errors.Is(err, ErrBadFault) {
			t.Errorf("Set(%v) = %v, want ErrBadFault", d, err)
		}
	}
	if err := f.Set(id, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := f.Delays(); len(got) != 1 || got[id] != 20*time.Millisecond {
		t.Fatalf("Delays = %v", got)
	}
	start := time.Now()
	f.before(id)
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Errorf("before slept %v, want ≥ 20ms", el)
	}
	// Another expert has no delay (asked, not timed: a loaded machine may
	// stall any call for longer than a threshold).
	if d := f.delayOf(router.ExpertID{Layer: 0, Index: 3}); d != 0 {
		t.Errorf("an expert without a fault is delayed %v", d)
	}
	if err := f.Set(id, 0); err != nil || len(f.Delays()) != 0 {
		t.Fatalf("Set(0): %v, delays %v", err, f.Delays())
	}
	f.Set(id, time.Second)
	f.Clear()
	if len(f.Delays()) != 0 {
		t.Fatalf("Clear left %v", f.Delays())
	}
}
