package api

import (
	"encoding/base64"
	"encoding/binary"
	"log/slog"
	"math"
	"net/http"
	"strings"
)

type embeddingObject struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

type embeddingResponse struct {
	Object string            `json:"object"`
	Data   []embeddingObject `json:"data"`
	Model  string            `json:"model"`
	Usage  usage             `json:"usage"`
}

// handleEmbeddings is POST /v1/embeddings: each input is encoded as plain
// text (BOS as the vocab says, no special-token parsing) and embedded by
// the engine, one after another.
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request, body []byte) {
	var req embeddingRequest
	if e := decodeBody(body, &req); e != nil {
		if e.Param == "prompt" {
			e.Param, e.Message = "input", strings.Replace(e.Message, "prompt:", "input:", 1)
		}
		writeError(w, e)
		return
	}
	switch {
	case req.Model == "":
		writeError(w, badRequest("model", "you must provide a model parameter"))
		return
	case req.Model != s.info.ID:
		writeError(w, modelNotFound(req.Model))
		return
	case !req.Input.Set || req.Input.count() == 0:
		writeError(w, badRequest("input", "you must provide a non-empty input"))
		return
	case req.Input.count() > maxInputs:
		writeError(w, badRequest("input", "at most %d inputs per request, got %d", maxInputs, req.Input.count()))
		return
	case req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64":
		writeError(w, badRequest("encoding_format", "encoding_format must be \"float\" or \"base64\""))
		return
	case req.Dimensions != nil && s.info.Dim > 0 && *req.Dimensions != s.info.Dim:
		writeError(w, badRequest("dimensions", "this model's embeddings have %d dimensions; dimensions=%d is not supported", s.info.Dim, *req.Dimensions))
		return
	}
	inputs := req.Input.Tokens
	for i, text := range req.Input.Texts {
		if text == "" {
			writeError(w, badRequest("input", "input %d is empty", i))
			return
		}
		inputs = append(inputs, s.tok.Encode(text, true, false))
	}
	total := 0
	for i, toks := range inputs {
		switch {
		case len(toks) == 0:
			writeError(w, badRequest("input", "input %d is empty", i))
			return
		case len(toks) > s.info.Context:
			writeError(w, badRequestCode("input", "context_length_exceeded",
				"input %d has %d tokens; this model's maximum context length is %d tokens", i, len(toks), s.info.Context))
			return
		}
		for _, t := range toks {
			if t < 0 || int(t) >= s.tok.VocabSize() {
				writeError(w, badRequest("input", "token id %d is outside the vocabulary of %d", t, s.tok.VocabSize()))
				return
			}
		}
		total += len(toks)
	}
	ctx := r.Context()
	resp := embeddingResponse{Object: "list", Model: s.info.ID, Data: make([]embeddingObject, len(inputs)),
		Usage: usage{PromptTokens: total, TotalTokens: total}}
	for i, toks := range inputs {
		vec, err := s.eng.Embed(ctx, toks)
		if err != nil {
			if ctx.Err() != nil {
				return // the client left
			}
			writeError(w, engineError(err))
			return
		}
		var emb any = vec
		if req.EncodingFormat == "base64" {
			b := make([]byte, 4*len(vec))
			for k, f := range vec {
				binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(f))
			}
			emb = base64.StdEncoding.EncodeToString(b)
		}
		resp.Data[i] = embeddingObject{Object: "embedding", Index: i, Embedding: emb}
	}
	info(r).attrs = append(info(r).attrs, slog.Int("prompt_tokens", total), slog.Int("inputs", len(inputs)))
	writeJSON(w, http.StatusOK, &resp)
}
