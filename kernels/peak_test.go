package kernels

import "testing"

func TestPeakLoop(t *testing.T) {
	for _, k := range []PeakKind{PeakInt8, PeakFP32} {
		ops, ok := PeakLoop(k, 1000)
		if !ok {
			t.Logf("%v: no peak loop on this CPU/build", k)
			continue
		}
		if ops <= 0 || ops%1000 != 0 {
			t.Errorf("%v: %d ops for 1000 iterations", k, ops)
		}
		if n, _ := PeakLoop(k, 0); n != 0 {
			t.Errorf("%v: %d ops for 0 iterations", k, n)
		}
	}
}
