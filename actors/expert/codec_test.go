package expert_test

import (
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/conclave-ai/conclave/actors/expert"
	"google.golang.org/protobuf/proto"
)

func TestFloatsRoundTrip(t *testing.T) {
	x := []float32{0, -0, 1.5, float32(math.Inf(-1)), math.MaxFloat32, math.SmallestNonzeroFloat32, -3.25}
	b := expert.AppendFloats([]byte{9}, x)
	if len(b) != 1+4*len(x) || b[0] != 9 {
		t.Fatalf("append: %d bytes", len(b))
	}
	got := make([]float32, len(x))
	if err := expert.DecodeFloats(got, b[1:], 1, len(x)); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if math.Float32bits(got[i]) != math.Float32bits(x[i]) {
			t.Fatalf("%d: %v, want %v", i, got[i], x[i])
		}
	}
	// Little-endian on the wire, whatever the host.
	if b := expert.AppendFloats(nil, []float32{1}); !slices.Equal(b, []byte{0, 0, 0x80, 0x3f}) {
		t.Fatalf("1.0 encodes as %x", b)
	}
	for _, c := range []struct{ n, rows, dim int }{{8, 1, 3}, {12, -1, -3}, {0, 1 << 30, 1 << 30}} {
		if err := expert.CheckShape(c.n, c.rows, c.dim); !errors.Is(err, expert.ErrBadPayload) {
			t.Errorf("CheckShape(%v): %v", c, err)
		}
	}
}

// FuzzComputeRequest: any bytes either fail to decode or give a request
// whose payload check never panics.
func FuzzComputeRequest(f *testing.F) {
	ok, _ := proto.Marshal(&expert.ComputeRequest{Layer: 1, Expert: 2, Rows: 2, Dim: 2, Activations: expert.AppendFloats(nil, []float32{1, 2, 3, 4})})
	f.Add(ok)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req expert.ComputeRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		if expert.CheckShape(len(req.Activations), int(req.Rows), int(req.Dim)) != nil {
			return
		}
		dst := make([]float32, int(req.Rows)*int(req.Dim))
		if err := expert.DecodeFloats(dst, req.Activations, int(req.Rows), int(req.Dim)); err != nil {
			t.Fatal(err)
		}
	})
}
