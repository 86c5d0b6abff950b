package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
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

// HostMemoryBytes is the memory this process may use at most: the host's
// RAM, or its cgroup's limit when lower; 0 when unknown.
func HostMemoryBytes() int64 {
	total := hostMemory().MemBytes
	if l, ok := CgroupMemoryLimit(); ok && (total == 0 || l < total) {
		total = l
	}
	return total
}

// CgroupMemoryLimit returns the memory limit of this process's cgroup: the
// lowest memory.max (cgroup v2) or memory.limit_in_bytes (v1) on its path
// from the root, and whether there is one. A container or a systemd unit
// with MemoryMax sets it; a node run there without --capacity or
// --memory-limit can take it as its memory limit.
func CgroupMemoryLimit() (int64, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		return string(b), err
	}
	return cgroupMemoryLimit(string(b), read)
}

// cgroupMemoryLimit is CgroupMemoryLimit over /proc/self/cgroup's text and
// a file reader. Values of 2^62 and above mean no limit (cgroup v1's
// unlimited is 2^63 − a page).
func cgroupMemoryLimit(procCgroup string, read func(path string) (string, error)) (int64, bool) {
	var limit int64
	found := false
	walk := func(dirs []string, file, cg string) {
		for p := path.Clean("/" + cg); ; p = path.Dir(p) {
			for _, dir := range dirs {
				v, err := read(path.Join(dir, p, file))
				if err != nil {
					continue
				}
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err == nil && n > 0 && n < 1<<62 && (!found || n < limit) {
					limit, found = n, true
				}
				break
			}
			if p == "/" {
				return
			}
		}
	}
	for _, line := range strings.Split(procCgroup, "\n") {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "": // v2 (unified), alone or in a hybrid layout
			walk([]string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}, "memory.max", parts[2])
		case slices.Contains(strings.Split(parts[1], ","), "memory"): // v1
			walk([]string{"/sys/fs/cgroup/memory"}, "memory.limit_in_bytes", parts[2])
		}
	}
	return limit, found
}

// InspectModel describes a GGUF model file for the cluster map: id (file
// name without .gguf), digest (the root of its chunk manifest, see
// Manifest), architecture and the expert shape. The returned model is
// marked Live so that setting it makes it the cluster's model.
func InspectModel(path string) (router.Model, error) {
	m, _, _, err := inspectModel(path)
	return m, err
}

// inspectModel is InspectModel that also returns the manifest (one pass
// over the file) and the model's dense (non-expert) weight bytes.
func inspectModel(path string) (router.Model, *Manifest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return router.Model{}, nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return router.Model{}, nil, 0, err
	}
	man, err := ComputeManifest(bufio.NewReaderSize(f, 1<<20), st.Size())
	f.Close()
	if err != nil {
		return router.Model{}, nil, 0, fmt.Errorf("cluster: model %s: %w", path, err)
	}
	gf, err := gguf.Open(path)
	if err != nil {
		return router.Model{}, nil, 0, err
	}
	defer gf.Close()
	w, err := model.Load(gf)
	if err != nil {
		return router.Model{}, nil, 0, fmt.Errorf("cluster: model %s: %w", path, err)
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
	return m, man, w.DenseBytes(), nil
}
