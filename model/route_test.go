package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func TestRoute(t *testing.T) {
	ln := func(x float64) float32 { return float32(math.Log(x)) }
	e := math.E
	cases := []struct {
		name        string
		logits      []float32 // rows × experts
		experts, k  int
		norm        bool
		wantExperts []int32
		wantWeights []float64
	}{
		{"top-1", []float32{0.1, 2, -1, 0.5}, 4, 1, true, []int32{1}, []float64{1}},
		{"top-2 picked in descending order, returned ascending", []float32{2, 0, 3, 1}, 4, 2, true,
			[]int32{0, 2}, []float64{1 / (1 + e), e / (1 + e)}},
		{"renormalised", []float32{0, ln(2), ln(3), ln(4)}, 4, 2, true, []int32{2, 3}, []float64{3.0 / 7, 4.0 / 7}},
		{"not renormalised: softmax probabilities", []float32{0, ln(2), ln(3), ln(4)}, 4, 2, false, []int32{2, 3}, []float64{0.3, 0.4}},
		{"all tied: lowest indices", []float32{1, 1, 1, 1}, 4, 2, true, []int32{0, 1}, []float64{0.5, 0.5}},
		{"all tied top-1", []float32{-3, -3, -3}, 3, 1, false, []int32{0}, []float64{1.0 / 3}},
		{"tie for the last place goes to the lower index", []float32{0, 5, 1, 1}, 4, 2, true,
			[]int32{1, 2}, []float64{e * e * e * e / (e*e*e*e + 1), 1 / (e*e*e*e + 1)}},
		{"k = experts", []float32{1, 2, 3}, 3, 3, true, []int32{0, 1, 2},
			[]float64{1 / (1 + e + e*e), e / (1 + e + e*e), e * e / (1 + e + e*e)}},
		{"large logits stay finite", []float32{1000, 999, -1000, 0}, 4, 2, true, []int32{0, 1}, []float64{e / (1 + e), 1 / (1 + e)}},
		{"-Inf logits are never chosen", []float32{float32(math.Inf(-1)), 0, ln(3), float32(math.Inf(-1))}, 4, 2, false,
			[]int32{1, 2}, []float64{0.25, 0.75}},
		{"several rows", []float32{
			0, 1, 2, 3, // → 2, 3
			3, 2, 1, 0, // → 0, 1
			0, 9, 0, 9, // → 1, 3 (tie)
		}, 4, 2, true, []int32{2, 3, 0, 1, 1, 3}, []float64{1 / (1 + e), e / (1 + e), e / (1 + e), 1 / (1 + e), 0.5, 0.5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rows := len(tc.logits) / tc.experts
			var r Routing
			// Route overwrites its input with the softmax probabilities.
			Route(&r, slices.Clone(tc.logits), rows, tc.experts, tc.k, tc.norm)
			if r.Rows != rows || r.TopK != tc.k {
				t.Errorf("Rows, TopK = %d, %d, want %d, %d", r.Rows, r.TopK, rows, tc.k)
			}
			if !slices.Equal(r.Experts, tc.wantExperts) {
				t.Errorf("experts %v, want %v", r.Experts, tc.wantExperts)
			}
			if len(r.Weights) != len(tc.wantWeights) {
				t.Fatalf("%d weights, want %d", len(r.Weights), len(tc.wantWeights))
			}
			for i, w := range r.Weights {
				// float32 softmax: a few ulps of relative error.
				if math.Abs(float64(w)-tc.wantWeights[i]) > 1e-6 {
					t.Errorf("weight %d = %v, want %v", i, w, tc.wantWeights[i])
				}
			}
			checkRouting(t, &r, tc.experts, tc.norm)
		})
	}
}

// checkRouting checks the invariants every routing has: per row, k distinct
// experts in range, ascending, with weights in [0, 1] summing to 1 when
// renormalised.
func checkRouting(t *testing.T, r *Routing, experts int, norm bool) {
	t.Helper()
	for i := 0; i < r.Rows; i++ {
		ids := r.Experts[i*r.TopK : (i+1)*r.TopK]
		ws := r.Weights[i*r.TopK : (i+1)*r.TopK]
		var sum float64
		for j, id := range ids {
			if id < 0 || int(id) >= experts {
				t.Errorf("row %d: expert %d out of range", i, id)
			}
			if j > 0 && id <= ids[j-1] {
				t.Errorf("row %d: experts %v not strictly ascending", i, ids)
			}
			if !(ws[j] >= 0 && ws[j] <= 1) {
				t.Errorf("row %d: weight %v outside [0, 1]", i, ws[j])
			}
			sum += float64(ws[j])
		}
		if norm && math.Abs(sum-1) > 1e-6 {
			t.Errorf("row %d: weights %v sum to %v, want 1", i, ws, sum)
		}
	}
}

// TestRouteRandom checks Route against a float64 top-k on random gate
// logits, skipping rows where the k-th and (k+1)-th probabilities are within
// float32 rounding of each other.
func TestRouteRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, shape := range []struct{ experts, k int }{{4, 1}, {4, 2}, {8, 2}, {8, 3}, {16, 4}, {64, 8}, {5, 5}} {
		const rows = 50
		logits := make([]float32, rows*shape.experts)
		for i := range logits {
			logits[i] = float32(rng.NormFloat64() * 3)
		}
		in := slices.Clone(logits)
		var r Routing
		Route(&r, in, rows, shape.experts, shape.k, true)
		checkRouting(t, &r, shape.experts, true)
		for i := 0; i < rows; i++ {
			row := logits[i*shape.experts : (i+1)*shape.experts]
			p := make([]float64, len(row))
			var sum float64
			for e, v := range row {
				p[e] = math.Exp(float64(v))
				sum += p[e]
			}
			order := make([]int, len(row))
			for e := range order {
				order[e] = e
			}
			sort.SliceStable(order, func(a, b int) bool { return p[order[a]] > p[order[b]] })
			if shape.k < shape.experts && (p[order[shape.k-1]]-p[order[shape.k]])/sum < 1e-6 {
				continue // near tie: float32 may decide either way
			}
			want := slices.Clone(order[:shape.k])
			sort.Ints(want)
			var wsum float64
			for _, e := range want {
				wsum += p[e]
			}
			for j, e := range want {
				if got := r.Experts[i*shape.k+j]; int(got) != e {
					t.Fatalf("%d experts top-%d row %d: experts %v, want %v", shape.experts, shape.k, i, r.Experts[i*shape.k:(i+1)*shape.k], want)
				}
				if got, w := float64(r.Weights[i*shape.k+j]), p[e]/wsum; math.Abs(got-w) > 1e-6 {
					t.Errorf("%d experts top-%d row %d: weight %d = %v, want %v", shape.experts, shape.k, i, j, got, w)
				}
			}
		}
	}
}

// TestRouteReusesBuffers checks that a Routing grows once and is then reused
// for smaller batches.
func TestRouteReusesBuffers(t *testing.T) {
	var r Routing
	Route(&r, []float32{1, 2, 3, 4, 5, 6, 7, 8}, 2, 4, 2, true)
	first := &r.Experts[0]
	Route(&r, []float32{4, 3, 2, 1}, 1, 4, 2, true)
	if &r.Experts[0] != first {
		t.Error("Route reallocated for a smaller batch")
	}
	if len(r.Experts) != 2 || len(r.Weights) != 2 || !slices.Equal(r.Experts, []int32{0, 1}) {
		t.Errorf("after reuse: experts %v weights %v, want [0 1] and 2 weights", r.Experts, r.Weights)
	}
	if n := testing.AllocsPerRun(100, func() { Route(&r, []float32{4, 3, 2, 1}, 1, 4, 2, true) }); n != 0 {
		t.Errorf("Route allocates %v times with a warm Routing", n)
	}
}

func TestPlan(t *testing.T) {
	type group struct {
		expert int
		rows   []int32
	}
	cases := []struct {
		name       string
		routing    Routing
		experts    int
		wantGroups []group
		wantSlot   []int32
	}{
		{
			name:    "one row top-1",
			routing: Routing{Rows: 1, TopK: 1, Experts: []int32{2}},
			experts: 4, wantGroups: []group{{2, []int32{0}}}, wantSlot: []int32{0},
		},
		{
			// Concatenated rows: e0 [0 2] | e1 [1] | e2 [0 1] | e3 [2].
			name:    "three rows top-2",
			routing: Routing{Rows: 3, TopK: 2, Experts: []int32{0, 2, 1, 2, 0, 3}},
			experts: 4,
			wantGroups: []group{
				{0, []int32{0, 2}}, {1, []int32{1}}, {2, []int32{0, 1}}, {3, []int32{2}},
			},
			wantSlot: []int32{0, 3, 2, 4, 1, 5},
		},
		{
			name:    "unused experts get no group",
			routing: Routing{Rows: 2, TopK: 2, Experts: []int32{1, 6, 1, 6}},
			experts: 8, wantGroups: []group{{1, []int32{0, 1}}, {6, []int32{0, 1}}},
			wantSlot: []int32{0, 2, 1, 3},
		},
		{
			name:    "every row to one expert",
			routing: Routing{Rows: 4, TopK: 1, Experts: []int32{3, 3, 3, 3}},
			experts: 4, wantGroups: []group{{3, []int32{0, 1, 2, 3}}},
			wantSlot: []int32{0, 1, 2, 3},
		},
		{
			name:    "k = experts",
			routing: Routing{Rows: 2, TopK: 3, Experts: []int32{0, 1, 2, 0, 1, 2}},
			experts: 3, wantGroups: []group{{0, []int32{0, 1}}, {1, []int32{0, 1}}, {2, []int32{0, 1}}},
			wantSlot: []int32{0, 2, 4, 1, 3, 5},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.routing.Rows * tc.routing.TopK
			rowsBuf, slot := make([]int32, n), make([]int32, n)
			groups := Plan(&tc.routing, tc.experts, nil, rowsBuf, slot)
			if len(groups) != len(tc.wantGroups) {
				t.Fatalf("%d groups %v, want %d", len(groups), groups, len(tc.wantGroups))
			}
			for i, g := range groups {
				if g.Expert != tc.wantGroups[i].expert || !slices.Equal(g.Rows, tc.wantGroups[i].rows) {
					t.Errorf("group %d = expert %d rows %v, want expert %d rows %v", i, g.Expert, g.Rows, tc.wantGroups[i].expert, tc.wantGroups[i].rows)
				}
			}
			if !slices.Equal(slot, tc.wantSlot) {
				t.Errorf("slot %v, want %v", slot, tc.wantSlot)
			}
			checkPlan(t, &tc.routing, groups, slot)
		})
	}
}

// checkPlan checks Plan's invariants: groups ascending and non-empty, rows
// ascending, each group's Rows capped at its own length, and slot pointing
// every (row, choice) at that row inside its expert's group.
func checkPlan(t *testing.T, r *Routing, groups []ExpertGroup, slot []int32) {
	t.Helper()
	var concat []int32
	var owner []int // expert of each concatenated position
	for i, g := range groups {
		if i > 0 && g.Expert <= groups[i-1].Expert {
			t.Errorf("groups not ascending: expert %d after %d", g.Expert, groups[i-1].Expert)
		}
		if len(g.Rows) == 0 || !slices.IsSorted(g.Rows) || cap(g.Rows) != len(g.Rows) {
			t.Errorf("expert %d rows %v (cap %d): want non-empty, ascending, capacity = length", g.Expert, g.Rows, cap(g.Rows))
		}
		concat = append(concat, g.Rows...)
		for range g.Rows {
			owner = append(owner, g.Expert)
		}
	}
	if len(concat) != r.Rows*r.TopK {
		t.Fatalf("groups hold %d rows, want %d", len(concat), r.Rows*r.TopK)
	}
	for i := 0; i < r.Rows; i++ {
		for j := 0; j < r.TopK; j++ {
			s := slot[i*r.TopK+j]
			if concat[s] != int32(i) || owner[s] != int(r.Experts[i*r.TopK+j]) {
				t.Errorf("slot[%d,%d] = %d holds row %d of expert %d, want row %d of expert %d",
					i, j, s, concat[s], owner[s], i, r.Experts[i*r.TopK+j])
			}
		}
	}
}

// TestPlanRandom checks Plan's invariants on routings from Route, reusing
// the groups slice as the runner does.
func TestPlanRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var r Routing
	groups := make([]ExpertGroup, 0, 8)
	for iter := 0; iter < 100; iter++ {
		experts := 1 + rng.IntN(16)
		k := 1 + rng.IntN(experts)
		rows := 1 + rng.IntN(40)
		logits := make([]float32, rows*experts)
		for i := range logits {
			logits[i] = float32(rng.NormFloat64())
		}
		Route(&r, logits, rows, experts, k, true)
		rowsBuf, slot := make([]int32, rows*k), make([]int32, rows*k)
		groups = Plan(&r, experts, groups, rowsBuf, slot)
		checkPlan(t, &r, groups, slot)
	}
}
