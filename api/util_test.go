package api

import (
	"github.com/conclave-ai/conclave/engine"
	"github.com/conclave-ai/conclave/model/sample"
	"github.com/conclave-ai/conclave/model/tokenizer"
)

func tokMsgs(roleContent ...string) []tokenizer.Message {
	var m []tokenizer.Message
	for i := 0; i+1 < len(roleContent); i += 2 {
		m = append(m, tokenizer.Message{Role: roleContent[i], Content: roleContent[i+1]})
	}
	return m
}

// testRequest is a greedy request that ignores EOS, as the API tests send.
func testRequest(prompt []int32, n int) engine.Request {
	return engine.Request{Prompt: prompt, MaxTokens: n, Sampling: sample.Config{}, IgnoreEOS: true}
}
