package kvcache_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/model/kvcache"
)

// Example stores the keys and values of two positions in an F16 cache, reads
// one back, and shows the cache refusing a position past its context.
func Example() {
	c, err := kvcache.New(kvcache.Config{Layers: 2, Ctx: 4, KVDim: 3, Type: kernels.F16})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bytes:", c.Bytes()) // 2 (K and V) × 2 layers × 4 positions × 3 floats × 2 bytes

	for pos := range 2 {
		if err := c.Reserve(pos); err != nil {
			log.Fatal(err)
		}
		for layer := range 2 {
			k := []float32{float32(pos), 0.5, -1}
			v := []float32{1.25, float32(layer), 3}
			c.Store(layer, pos, k, v)
		}
	}
	fmt.Println("positions:", c.Len())

	row := c.K16(1, 0)[1*3 : 2*3] // layer 1, block 0 (the only one), position 1
	fmt.Println("key:", kernels.F16ToF32(row[0]), kernels.F16ToF32(row[1]), kernels.F16ToF32(row[2]))

	err = c.Reserve(4)
	fmt.Println("full:", errors.Is(err, kvcache.ErrFull))

	c.Truncate(1) // rewind: position 1 is forgotten
	fmt.Println("after truncate:", c.Len())
	// Output:
	// bytes: 96
	// positions: 2
	// key: 1 0.5 -1
	// full: true
	// after truncate: 1
}
