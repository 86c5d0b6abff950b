package cluster

import (
	"strings"
	"testing"

	"github.com/conclave-ai/conclave/router"
)

// TestWeightsVersionNeverComesBack: the version the engine watches moves on
// with every flip, so an update and its rollback between two of the
// engine's looks (live v2, then v3, then v2 again) still empty its prefix
// cache; staging a version beside the live one changes nothing.
func TestWeightsVersionNeverComesBack(t *testing.T) {
	e := router.ExpertID{Layer: 1, Index: 2}
	v2, v3 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	at := func(v router.ExpertVersion) uint64 {
		return weightsVersionOf(&router.Map{ExpertVersions: map[router.ExpertID]router.ExpertVersion{e: v}})
	}
	base := weightsVersionOf(&router.Map{})
	live2 := at(router.ExpertVersion{Live: v2, Prev: router.BaseVersion, HasPrev: true, Updates: 1})
	staging3 := at(router.ExpertVersion{Live: v2, Prev: router.BaseVersion, HasPrev: true, Staged: v3, Staging: true, Updates: 1})
	live3 := at(router.ExpertVersion{Live: v3, Prev: v2, HasPrev: true, Updates: 2})
	back2 := at(router.ExpertVersion{Live: v2, Prev: v3, HasPrev: true, Updates: 3})
	backBase := at(router.ExpertVersion{Live: router.BaseVersion, Prev: v2, HasPrev: true, Updates: 2})
	if staging3 != live2 {
		t.Error("staging a version changed the weights version")
	}
	seen := map[uint64]string{}
	for _, s := range []struct {
		name string
		v    uint64
	}{{"base", base}, {"v2 live", live2}, {"v3 live", live3}, {"v2 live again", back2}, {"base again", backBase}} {
		if prev, ok := seen[s.v]; ok {
			t.Errorf("%s has the weights version of %s", s.name, prev)
		}
		seen[s.v] = s.name
	}
}
