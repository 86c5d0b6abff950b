package dispatch_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/conclave-ai/conclave/actors/dispatch"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/router"
)

// TestRouted: every group's rows count for its (layer, expert), whichever
// way the expert is computed (here: the fallback).
func TestRouted(t *testing.T) {
	w := loadModel(t, "tiny")
	sys := newSystem()
	defer sys.Shutdown()
	pool := kernels.NewPool(1)
	defer pool.Close()
	d, err := dispatch.New(dispatch.DefaultConfig(), sys, router.NewMap, nil, &dispatch.Fallback{W: w, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	group := func(e, rows int) model.ExpertGroup {
		return model.ExpertGroup{Expert: e, Rows: make([]int32, rows), In: make([]float32, rows*w.Dim), Out: make([]float32, rows*w.Dim)}
	}
	for range 2 {
		if err := d.RunExperts(context.Background(), 0, []model.ExpertGroup{group(0, 3), group(2, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.RunExperts(context.Background(), 1, []model.ExpertGroup{group(1, 2)}); err != nil {
		t.Fatal(err)
	}
	got := d.Routed()
	want := map[router.ExpertID]int64{{Layer: 0, Index: 0}: 6, {Layer: 0, Index: 2}: 2, {Layer: 1, Index: 1}: 2}
	if len(got) != len(want) {
		t.Fatalf("Routed %v, want %v", got, want)
	}
	for id, n := range want {
		if got[id] != n {
			t.Errorf("Routed %v, want %v", got, want)
		}
	}
}

func TestRateMeter(t *testing.T) {
	m := dispatch.NewRateMeter(time.Second)
	t0 := time.Unix(1000, 0)
	a, b := router.ExpertID{Layer: 0, Index: 0}, router.ExpertID{Layer: 0, Index: 1}
	if r := m.Observe(t0, map[router.ExpertID]int64{a: 100}); len(r) != 0 {
		t.Fatalf("baseline gave rates %v", r)
	}
	// A steady 100 rows/s converges to 100; an expert that stops decays away.
	var r map[router.ExpertID]float64
	for i := 1; i <= 20; i++ {
		counts := map[router.ExpertID]int64{a: 100 + int64(i)*100}
		if i <= 2 {
			counts[b] = int64(i) * 50
		} else {
			counts[b] = 100
		}
		r = m.Observe(t0.Add(time.Duration(i)*time.Second), counts)
	}
	if math.Abs(r[a]-100) > 0.01 {
		t.Errorf("steady rate %v, want 100", r[a])
	}
	if r[b] > 0.01 {
		t.Errorf("idle expert's rate %v, want ~0", r[b])
	}
}

// TestRateMeterSameInstant: counts observed again at an instant the clock
// has not moved past are not lost: they count in the next interval.
func TestRateMeterSameInstant(t *testing.T) {
	m := dispatch.NewRateMeter(0) // each observation replaces the rate
	a := router.ExpertID{Layer: 0, Index: 0}
	t0, t1, t2 := time.Unix(1000, 0), time.Unix(1001, 0), time.Unix(1002, 0)
	m.Observe(t0, map[router.ExpertID]int64{a: 0})
	m.Observe(t1, map[router.ExpertID]int64{a: 100})
	m.Observe(t1, map[router.ExpertID]int64{a: 200}) // the clock did not move
	if r := m.Observe(t2, map[router.ExpertID]int64{a: 300}); r[a] != 200 {
		t.Errorf("rate %v rows/s over the last second, want 200 (300 − 100)", r[a])
	}
}
