package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/router"
)

// hostMemory describes the host's RAM as a "cpu" device, from
// /proc/meminfo (MemTotal, MemAvailable); zero sizes where unavailable.
func hostMemory() router.Device {
	d := router.Device{Name: "cpu"}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return d
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "MemTotal:":
			d.MemBytes = kb << 10
		case "MemAvailable:":
			d.FreeBytes = kb << 10
		}
	}
	return d
}

// InspectModel describes a GGUF model file for the cluster map: id (file
// name without .gguf), digest (the root of its chunk manifest, see
// Manifest), architecture and the expert shape. The returned model is
// marked Live so that setting it makes it the cluster's model.
func InspectModel(path string) (router.Model, error) {
	m, _, err := inspectModel(path)
	return m, err
}

// inspectModel is InspectModel that also returns the manifest (one pass
// over the file).
func inspectModel(path string) (router.Model, *Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return router.Model{}, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return router.Model{}, nil, err
	}
	man, err := ComputeManifest(bufio.NewReaderSize(f, 1<<20), st.Size())
	f.Close()
	if err != nil {
		return router.Model{}, nil, fmt.Errorf("cluster: model %s: %w", path, err)
	}
	gf, err := gguf.Open(path)
	if err != nil {
		return router.Model{}, nil, err
	}
	defer gf.Close()
	w, err := model.Load(gf)
	if err != nil {
		return router.Model{}, nil, fmt.Errorf("cluster: model %s: %w", path, err)
	}
	m := router.Model{
		ID:      strings.TrimSuffix(filepath.Base(path), ".gguf"),
		Digest:  man.Digest(),
		Version: 1,
		Arch:    w.Arch,
		Layers:  w.Layers,
		Experts: w.Experts,
		TopK:    w.TopK,
		Live:    true,
	}
	if w.Layers > 0 {
		m.ExpertBytes = w.FeedForward(0, 0).Bytes()
	}
	return m, man, nil
}
