package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/conclave-ai/conclave/model/tokenizer"
)

func Example() {
	// A tiny SentencePiece ("llama") vocab, as a GGUF reader would fill it.
	v := tokenizer.Vocab{
		Model:  "llama",
		Tokens: []string{"<unk>", "<s>", "</s>", "▁", "H", "i", "▁H", "▁Hi", "!", "<0x21>", "<0xC3>", "<0xA9>"},
		Scores: []float32{0, 0, 0, -10, -5, -5, -2, -1, -5, 0, 0, 0},
		Types:  []int32{2, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6, 6},
		BOS:    1, EOS: 2, UNK: 0, PAD: -1, EOT: -1, EOM: -1,
		AddBOS: true, AddSpacePrefix: true,
	}
	tk, err := tokenizer.New(v)
	if err != nil {
		log.Fatal(err)
	}
	ids := tk.Encode("Hi é", true, false)
	fmt.Println(ids)
	for i, id := range ids {
		if i > 0 {
			fmt.Print(" ")
		}
		fmt.Printf("%q", tk.Piece(id))
	}
	fmt.Println()
	fmt.Printf("%q\n", tk.Decode(ids))

	prompt, err := tk.ApplyChatTemplate([]tokenizer.Message{{Role: "user", Content: "Hi!"}}, true)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", prompt)
	// Output:
	// [1 7 3 10 11]
	// "<s>" "▁Hi" "▁" "<0xC3>" "<0xA9>"
	// " Hi é"
	// "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
}
