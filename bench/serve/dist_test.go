package serve

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestParseDist(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Dist
		bad  bool
	}{
		{in: "128", want: Fixed(128)},
		{in: "fixed:7", want: Fixed(7)},
		{in: "uniform:64-512", want: Dist{DistUniform, 64, 512}},
		{in: "uniform:5-5", want: Dist{DistUniform, 5, 5}},
		{in: "normal:256,64", want: Dist{DistNormal, 256, 64}},
		{in: " normal:10, 0 ", want: Dist{DistNormal, 10, 0}},
		{in: "0", bad: true},
		{in: "1.5", bad: true},
		{in: "-3", bad: true},
		{in: "uniform:512-64", bad: true},
		{in: "uniform:64", bad: true},
		{in: "uniform:0-4", bad: true},
		{in: "normal:256", bad: true},
		{in: "normal:256,-1", bad: true},
		{in: "normal:NaN,1", bad: true},
		{in: "normal:1e300,1", bad: true},
		{in: "zipf:1", bad: true},
		{in: "", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDist(tc.in)
			if tc.bad {
				if !errors.Is(err, errDist) {
					t.Fatalf("ParseDist(%q) = %+v, %v; want an error", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseDist(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			back, err := ParseDist(got.String())
			if err != nil || back != got {
				t.Errorf("String %q reads back as %+v, %v", got.String(), back, err)
			}
		})
	}
}

func TestDistSample(t *testing.T) {
	for _, tc := range []struct {
		d            Dist
		lo, hi       int
		mean, within float64 // sample mean must be within `within` of mean
	}{
		{Fixed(128), 128, 128, 128, 0},
		{Dist{DistUniform, 64, 512}, 64, 512, 288, 5},
		{Dist{DistUniform, 3, 4}, 3, 4, 3.5, 0.02},
		{Dist{DistNormal, 256, 32}, 1, math.MaxInt, 256, 1},
		{Dist{DistNormal, 2, 50}, 1, math.MaxInt, 0, -1}, // clamped at 1: mean not checked
	} {
		t.Run(tc.d.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			const n = 20000
			var sum float64
			for range n {
				v := tc.d.Sample(r)
				if v < tc.lo || v > tc.hi {
					t.Fatalf("sample %d outside [%d, %d]", v, tc.lo, tc.hi)
				}
				sum += float64(v)
			}
			if tc.within >= 0 && math.Abs(sum/n-tc.mean) > tc.within {
				t.Errorf("sample mean %v, want %v ± %v", sum/n, tc.mean, tc.within)
			}
			a, b := rand.New(rand.NewPCG(9, 9)), rand.New(rand.NewPCG(9, 9))
			for range 100 {
				if tc.d.Sample(a) != tc.d.Sample(b) {
					t.Fatal("the same seed drew different lengths")
				}
			}
		})
	}
}

func TestArrivals(t *testing.T) {
	const rate, n = 50.0, 20000
	a := Arrivals(rate, n, 7, 0)
	if a[0] != 0 {
		t.Errorf("the first request goes out at %v, want the level's start", a[0])
	}
	if b := Arrivals(rate, n, 7, 0); a[n-1] != b[n-1] {
		t.Error("the same seed gave different schedules")
	}
	if c := Arrivals(rate, n, 7, 1); a[10] == c[10] {
		t.Error("two levels share a schedule")
	}
	for i := 1; i < n; i++ {
		if a[i] < a[i-1] {
			t.Fatalf("arrival %d before arrival %d", i, i-1)
		}
	}
	// n arrivals of a Poisson process at rate take n/rate s; the relative
	// standard deviation of the sum of n exponentials is 1/√n ≈ 0.7%.
	if got, want := a[n-1].Seconds(), n/rate; math.Abs(got-want)/want > 0.03 {
		t.Errorf("%d arrivals took %.1fs, want ≈ %.1fs", n, got, want)
	}
}
