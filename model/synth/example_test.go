package synth_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/model/synth"
)

// Example writes a dense Q8_0 variant of the tiny preset and loads it back.
func Example() {
	dir, err := os.MkdirTemp("", "synth-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c, err := synth.Preset("tiny")
	if err != nil {
		log.Fatal(err)
	}
	c.Experts, c.TopK = 0, 0 // dense
	c.Type = kernels.Q8_0
	path := filepath.Join(dir, "dense.gguf")
	if err := synth.Write(c, path); err != nil {
		log.Fatal(err)
	}

	f, err := gguf.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	w, err := model.Load(f)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w)
	fmt.Println("Q8_0 matrices:", w.TensorTypes()["Q8_0"])
	// Output:
	// llama dim=64 layers=2 heads=4/2 ffn=96 experts=0 top-0 vocab=512 ctx=256
	// Q8_0 matrices: 16
}

// ExampleConfig_Validate shows the sentinel a bad shape is reported with.
func ExampleConfig_Validate() {
	c, _ := synth.Preset("tiny")
	c.Dim = 60 // not divisible into 4 even-sized heads
	fmt.Println(c.Validate())
	// Output:
	// synth: invalid config: dim 60 must split into 4 heads of even size
}
