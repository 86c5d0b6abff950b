# Conclave — build, run, test, benchmark, parity.
GO      ?= go
BIN     := bin/conclave
DEMO    := var/demo.gguf
PROMPT  ?= Tell me about the cluster
THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: build run test test-race bench bench-peer bench-cluster parity openai-js bench-serve-peer fuzz clean vet

build:
	$(GO) build -o $(BIN) ./cmd/conclave

$(DEMO): | build
	@mkdir -p var
	$(BIN) model synth --preset demo --out $(DEMO)

# `make run` serves the OpenAI-compatible API on 127.0.0.1:8080 with the demo
# model (synthesized into var/demo.gguf on first use); Ctrl-C drains and stops.
run: build
	@echo 'Try:  curl -s http://127.0.0.1:8080/v1/chat/completions -H "Content-Type: application/json" \'
	@echo '        -d '"'"'{"model":"conclave-synth-demo","messages":[{"role":"user","content":"$(PROMPT)"}],"max_tokens":48}'"'"
	$(BIN) serve

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)

test: vet
	$(GO) test -count=1 ./...

# Go micro-benchmarks, then pp256/pp512/tg128 on the bench preset; with
# llama.cpp's llama-bench built (or BENCH_LLAMACPP=1 to build it, ~6 min) the
# same tests run in llama.cpp too and the ratios are printed.
# The race detector on the concurrent serving path: API, engine, router map,
# KV block pool, expert actors and dispatch.
test-race:
	$(GO) test -race -count=1 ./api/ ./engine/ ./router/ ./model/kvcache/ ./actors/...

bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 300ms ./kernels/ ./model/...
	@mkdir -p var
	@test -f var/bench.gguf || $(BIN) model synth --preset bench --out var/bench.gguf
	@if [ -x var/llama.cpp/build/bin/llama-bench ] || [ "$(BENCH_LLAMACPP)" = 1 ]; then \
		THREADS=$(THREADS) bash bench/compare.sh var/bench.gguf; \
	else \
		$(BIN) bench model --model var/bench.gguf --threads $(THREADS) --prompt 256,512 --gen 128 && \
		echo "(BENCH_LLAMACPP=1 make bench also builds llama.cpp's llama-bench and prints conclave/llama.cpp ratios)"; \
	fi

parity:
	bash bench/parity/run.sh

# llama.cpp's llama-server and ours under the serving goal's load, alternating
# (bench/serve-peer.sh; builds llama-server on first use, ~10 min).
bench-serve-peer: build
	bash bench/serve-peer.sh

# The official openai npm client against a running `conclave serve`.
openai-js:
	bash bench/openai-js/run.sh

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 60s ./model/gguf/

clean:
	rm -rf bin var

# llama.cpp side by side, alternating A B A B (bench/peer/run.sh): builds
# llama-bench on first use (~10 min), synthesizes the Q8_0, F16 and Q4_0 bench
# models, prints each ratio's median.
bench-peer: build
	@mkdir -p var
	@test -f var/bench.gguf || $(BIN) model synth --preset bench --out var/bench.gguf
	@test -f var/bench-f16.gguf || $(BIN) model synth --preset bench --type f16 --out var/bench-f16.gguf
	@test -f var/bench-q4_0.gguf || $(BIN) model synth --preset bench --type q4_0 --out var/bench-q4_0.gguf
	bash bench/peer/run.sh var/bench.gguf var/bench-f16.gguf var/bench-q4_0.gguf

# One node against three as real processes on loopback (16 concurrent
# streams, replication 1), alternating; prints the median ratio.
bench-cluster: build
	@mkdir -p var
	@test -f var/bench.gguf || $(BIN) model synth --preset bench --out var/bench.gguf
	BIN=$(CURDIR)/$(BIN) bash bench/cluster/run.sh $(CURDIR)/var/bench.gguf
