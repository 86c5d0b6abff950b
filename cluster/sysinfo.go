package cluster

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
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
// name without .gguf), sha256 digest, architecture and the expert shape.
// The returned model is marked Live so that setting it makes it the
// cluster's model.
func InspectModel(path string) (router.Model, error) {
	m, _, err := inspectModel(path)
	return m, err
}

// inspectModel is InspectModel that also returns the model's dense
// (non-expert) weight bytes.
func inspectModel(path string) (router.Model, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return router.Model{}, 0, err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return router.Model{}, 0, err
	}
	gf, err := gguf.Open(path)
	if err != nil {
		return router.Model{}, 0, err
	}
	defer gf.Close()
	w, err := model.Load(gf)
	if err != nil {
		return router.Model{}, 0, fmt.Errorf("cluster: model %s: %w", path, err)
	}
	m := router.Model{
		ID:      strings.TrimSuffix(filepath.Base(path), ".gguf"),
		Digest:  hex.EncodeToString(h.Sum(nil)),
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
	return m, w.DenseBytes(), nil
}
