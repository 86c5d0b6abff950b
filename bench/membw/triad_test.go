package membw

import (
	"errors"
	"fmt"
	"testing"
)

func TestTriad(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 7, 1001} {
		a, b, c := make([]float64, n), make([]float64, n), make([]float64, n)
		for i := range n {
			b[i], c[i] = float64(i), float64(2*i+1)
		}
		Triad(a, b, c, 0.5)
		for i := range n {
			if want := float64(i) + 0.5*float64(2*i+1); a[i] != want {
				t.Fatalf("n=%d: a[%d] = %v, want %v", n, i, a[i], want)
			}
		}
	}
}

func TestMeasureSmall(t *testing.T) {
	for _, threads := range []int{1, 3} {
		r, err := Measure(Config{ArrayBytes: 64 << 10, Threads: threads, Reps: 2})
		if err != nil {
			t.Fatal(err)
		}
		if r.BestGBs <= 0 || r.MeanGBs <= 0 || r.MeanGBs > r.BestGBs || r.BytesPerPass != 3*(64<<10) {
			t.Fatalf("threads=%d: implausible result %+v", threads, r)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Config{
		"small":   {ArrayBytes: 8, Threads: 1, Reps: 1},
		"threads": {ArrayBytes: 1 << 20, Threads: 0, Reps: 1},
		"reps":    {ArrayBytes: 1 << 20, Threads: 1, Reps: 0},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Measure(c); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Measure(%+v) = %v, want ErrInvalidConfig", c, err)
			}
		})
	}
}

func TestStatusField(t *testing.T) {
	text := "MemTotal:       24576000 kB\nMemAvailable:    2048 kB\nHugePages_Total:       0\n"
	for _, tc := range []struct {
		key  string
		want int64
		ok   bool
	}{
		{"MemAvailable", 2048 * 1024, true},
		{"HugePages_Total", 0, true},
		{"MemFree", 0, false},
	} {
		got, ok := StatusField(text, tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("StatusField(%q) = %d, %v; want %d, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func ExampleTriad() {
	a := make([]float64, 2)
	Triad(a, []float64{1, 2}, []float64{10, 20}, 0.5)
	fmt.Println(a)
	// Output: [6 12]
}
