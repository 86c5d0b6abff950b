package model

import (
	"fmt"
	"sort"
	"sync"

	"github.com/conclave-ai/conclave/model/gguf"
)

// Loader binds a GGUF file's tensors to the Weights of one architecture.
type Loader func(f *gguf.File) (*Weights, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Loader{}
)

// Register makes an architecture loadable under its general.architecture
// name. It panics on a duplicate name: that is a programming error.
func Register(arch string, l Loader) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[arch]; dup {
		panic("model: architecture registered twice: " + arch)
	}
	registry[arch] = l
}

// Architectures lists the registered architecture names.
func Architectures() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	var names []string
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Load reads the model weights of an open GGUF file. The returned Weights
// point into the file's mapping: keep the file open while they are used.
func Load(f *gguf.File) (*Weights, error) {
	arch, err := f.String("general.architecture")
	if err != nil {
		return nil, err
	}
	registryMu.RLock()
	l, ok := registry[arch]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s: architecture %q is not supported (supported: %v)", ErrInvalidModel, f.Path, arch, Architectures())
	}
	w, err := l(f)
	if err != nil {
		return nil, err
	}
	w.file = f
	return w, nil
}
