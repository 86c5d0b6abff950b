package serve

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// DistKind names a length distribution.
type DistKind string

// The distributions ParseDist reads.
const (
	DistFixed   DistKind = "fixed"   // always A
	DistUniform DistKind = "uniform" // integers in [A, B], equally likely
	DistNormal  DistKind = "normal"  // mean A, standard deviation B, rounded
)

// Dist is a distribution of token counts. Samples are at least 1.
type Dist struct {
	Kind DistKind
	A, B float64
}

// Fixed is the distribution that is always n.
func Fixed(n int) Dist { return Dist{Kind: DistFixed, A: float64(n)} }

var errDist = errors.New("bad length distribution")

// ParseDist reads "N" or "fixed:N", "uniform:LO-HI" or "normal:MEAN,STD".
func ParseDist(s string) (Dist, error) {
	kind, arg, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		kind, arg = string(DistFixed), kind
	}
	num := func(s string) (float64, error) {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %q is not a number", errDist, s)
		}
		return v, nil
	}
	var (
		d          = Dist{Kind: DistKind(kind)}
		a, b       string
		errA, errB error
	)
	switch d.Kind {
	case DistFixed:
		d.A, errA = num(arg)
	case DistUniform:
		if a, b, ok = strings.Cut(arg, "-"); !ok {
			return Dist{}, fmt.Errorf("%w: want uniform:LO-HI, got %q", errDist, s)
		}
		d.A, errA = num(a)
		d.B, errB = num(b)
	case DistNormal:
		if a, b, ok = strings.Cut(arg, ","); !ok {
			return Dist{}, fmt.Errorf("%w: want normal:MEAN,STD, got %q", errDist, s)
		}
		d.A, errA = num(a)
		d.B, errB = num(b)
	default:
		return Dist{}, fmt.Errorf("%w: unknown kind %q (fixed, uniform or normal)", errDist, kind)
	}
	if err := errors.Join(errA, errB); err != nil {
		return Dist{}, err
	}
	return d, d.Validate()
}

// Validate reports a distribution that cannot be sampled.
func (d Dist) Validate() error {
	whole := func(v float64) bool { return v >= 1 && v <= 1<<24 && v == math.Trunc(v) }
	switch d.Kind {
	case DistFixed:
		if !whole(d.A) {
			return fmt.Errorf("%w: fixed length %v is not a whole number in [1, 2^24]", errDist, d.A)
		}
	case DistUniform:
		if !whole(d.A) || !whole(d.B) || d.A > d.B {
			return fmt.Errorf("%w: uniform range %v-%v needs whole numbers 1 ≤ LO ≤ HI ≤ 2^24", errDist, d.A, d.B)
		}
	case DistNormal:
		if !(d.A >= 1 && d.A <= 1<<24) || !(d.B >= 0 && d.B <= 1<<24) {
			return fmt.Errorf("%w: normal needs 1 ≤ mean ≤ 2^24 and 0 ≤ std ≤ 2^24, got %v,%v", errDist, d.A, d.B)
		}
	default:
		return fmt.Errorf("%w: unknown kind %q", errDist, d.Kind)
	}
	return nil
}

// Sample draws one length from r; it is at least 1.
func (d Dist) Sample(r *rand.Rand) int {
	switch d.Kind {
	case DistUniform:
		return int(d.A) + r.IntN(int(d.B-d.A)+1)
	case DistNormal:
		return max(1, int(math.Round(d.A+d.B*r.NormFloat64())))
	}
	return max(1, int(d.A))
}

// Mean is the expected sample (ignoring the clamp at 1 for normal).
func (d Dist) Mean() float64 {
	if d.Kind == DistUniform {
		return (d.A + d.B) / 2
	}
	return d.A
}

// String is the form ParseDist reads.
func (d Dist) String() string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	switch d.Kind {
	case DistUniform:
		return "uniform:" + f(d.A) + "-" + f(d.B)
	case DistNormal:
		return "normal:" + f(d.A) + "," + f(d.B)
	}
	return f(d.A)
}

// MarshalText writes String, so reports hold "uniform:64-512".
func (d Dist) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (d *Dist) UnmarshalText(b []byte) error {
	v, err := ParseDist(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
