package gguf_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/gguf"
)

func ExampleWriter() {
	// A 3×2 F32 matrix: ne[0] = 3 (row length), ne[1] = 2 rows.
	data := make([]byte, 0, 6*4)
	for _, x := range []float32{1, 2, 3, 4, 5, 6} {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(x))
	}
	w := gguf.NewWriter(3)
	for _, err := range []error{
		w.AddKV("general.architecture", "toy"),
		w.AddKV("toy.block_count", uint32(1)),
		w.AddKV("tokenizer.ggml.tokens", []string{"<s>", "a", "b"}),
		w.AddTensor("output.weight", kernels.F32, []uint64{3, 2}, data),
	} {
		if err != nil {
			log.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "gguf-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "toy.gguf")
	if err := w.WriteFile(path); err != nil {
		log.Fatal(err)
	}
	st, _ := os.Stat(path)
	fmt.Println(st.Size(), "bytes")
	// Output: 288 bytes
}

func ExampleOpen() {
	path := writeToy()
	defer os.RemoveAll(filepath.Dir(path))

	f, err := gguf.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	arch, _ := f.String("general.architecture")
	layers, _ := f.Uint(arch + ".block_count")
	eps, _ := f.FloatOr(arch+".attention.layer_norm_rms_epsilon", 1e-6)
	tokens, _ := f.Strings("tokenizer.ggml.tokens")
	fmt.Println(arch, layers, eps, tokens)

	ti, data, err := f.Tensor("output.weight")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ti.Name, ti.Type, ti.Dims, len(data), "bytes")

	_, err = f.Uint("general.architecture")
	fmt.Println(errors.Is(err, gguf.ErrWrongType))
	// Output:
	// toy 1 1e-06 [<s> a b]
	// output.weight F32 [3 2] 24 bytes
	// true
}

// writeToy writes the file of ExampleWriter to a temporary directory.
func writeToy() string {
	w := gguf.NewWriter(3)
	w.AddKV("general.architecture", "toy")
	w.AddKV("toy.block_count", uint32(1))
	w.AddKV("tokenizer.ggml.tokens", []string{"<s>", "a", "b"})
	w.AddTensor("output.weight", kernels.F32, []uint64{3, 2}, make([]byte, 24))
	dir, err := os.MkdirTemp("", "gguf-example")
	if err != nil {
		log.Fatal(err)
	}
	path := filepath.Join(dir, "toy.gguf")
	if err := w.WriteFile(path); err != nil {
		log.Fatal(err)
	}
	return path
}
