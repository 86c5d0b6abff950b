# Conclave — build, run, test, benchmark, parity.
GO      ?= go
BIN     := bin/conclave
DEMO    := var/demo.gguf
PROMPT  ?= Tell me about the cluster
THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: build run test test-short bench parity fuzz clean vet

build:
	$(GO) build -o $(BIN) ./cmd/conclave

$(DEMO): | build
	@mkdir -p var
	$(BIN) model synth --preset demo --out $(DEMO)

# For now `make run` generates a completion from the demo model; the serving
# issue turns it into a server.
run: build $(DEMO)
	$(BIN) generate --model $(DEMO) --chat --prompt "$(PROMPT)" --max-tokens 48 --temperature 0.8 --seed 42 --threads $(THREADS)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)

test: vet
	$(GO) test -count=1 ./...

bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./kernels/ ./model/...
	@mkdir -p var
	@test -f var/bench.gguf || $(BIN) model synth --preset bench --out var/bench.gguf
	$(BIN) generate --model var/bench.gguf --tokens $$(seq -s, 1 256) --max-tokens 128 --threads $(THREADS) --json

parity:
	bash bench/parity/run.sh

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 60s ./model/gguf/

clean:
	rm -rf bin var
