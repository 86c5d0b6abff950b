package kernels

// The amd64 kernels are generated with avo by a generator in its own module,
// so the main module does not depend on avo; the AMX kernels by amxgen (the
// Go assembler has no AMX mnemonics, so it writes their bytes itself).
//go:generate sh -c "cd internal/asmgen && go run . -out ../../matmul_amd64.s -stubs ../../matmul_amd64_stubs.go -pkg kernels"
//go:generate go run ./internal/amxgen -out matmul_amx_amd64.s -stubs matmul_amx_amd64_stubs.go
