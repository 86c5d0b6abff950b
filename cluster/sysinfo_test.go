package cluster

import (
	"os"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cgroup string
		files  map[string]string
		want   int64
		found  bool
	}{
		{"v2 unit with MemoryMax", "0::/system.slice/conclave.service\n",
			map[string]string{"/sys/fs/cgroup/system.slice/conclave.service/memory.max": "536870912\n", "/sys/fs/cgroup/system.slice/memory.max": "max\n"},
			512 << 20, true},
		{"v2 parent lower", "0::/a/b\n",
			map[string]string{"/sys/fs/cgroup/a/b/memory.max": "max\n", "/sys/fs/cgroup/a/memory.max": "1000000\n"}, 1000000, true},
		{"v2 unlimited", "0::/a\n", map[string]string{"/sys/fs/cgroup/a/memory.max": "max\n"}, 0, false},
		{"hybrid: v1 memory unlimited, unified limited", "4:memory:/p/x\n0::/p/x\n",
			map[string]string{"/sys/fs/cgroup/memory/p/x/memory.limit_in_bytes": "9223372036854771712\n",
				"/sys/fs/cgroup/unified/p/x/memory.max": "2147483648\n"}, 2 << 30, true},
		{"v1 limited", "9:cpu,cpuacct:/\n4:memory:/docker/abc\n",
			map[string]string{"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "268435456"}, 256 << 20, true},
		{"no cgroup files", "0::/\n", nil, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := func(p string) (string, error) {
				if v, ok := tc.files[p]; ok {
					return v, nil
				}
				return "", os.ErrNotExist
			}
			got, found := cgroupMemoryLimit(tc.cgroup, read)
			if got != tc.want || found != tc.found {
				t.Errorf("cgroupMemoryLimit = %d, %v; want %d, %v", got, found, tc.want, tc.found)
			}
		})
	}
}
