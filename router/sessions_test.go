package router

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestSessionTable runs random changes against a plain map. Every version
// of the table must keep its contents after later versions derive from it
// (the map's snapshots share them), and equal contents must compare and
// encode equal whatever the history.
func TestSessionTable(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	type version struct {
		t    SessionTable
		want map[string]Session
	}
	var hist []version
	tab, want := SessionTable{}, map[string]Session{}
	for step := range 3000 {
		switch op := r.IntN(10); {
		case op < 6:
			s := Session{ID: fmt.Sprintf("s%d", r.IntN(400)), Home: fmt.Sprint("n", r.IntN(3)), LastUseMS: int64(step), ExpiresMS: int64(r.IntN(1000))}
			tab, want[s.ID] = tab.Set(s), s
		case op < 9:
			id := fmt.Sprintf("s%d", r.IntN(400))
			tab = tab.Delete(id)
			delete(want, id)
		default:
			home := fmt.Sprint("n", r.IntN(3))
			tab = tab.DeleteFunc(func(s Session) bool { return s.Home == home })
			maps.DeleteFunc(want, func(_ string, s Session) bool { return s.Home == home })
		}
		if step%100 == 0 {
			hist = append(hist, version{tab, maps.Clone(want)})
		}
	}
	hist = append(hist, version{tab, want})
	for i, v := range hist {
		if v.t.Len() != len(v.want) || !maps.Equal(v.t.Map(), v.want) {
			t.Fatalf("version %d: %d sessions %v, want %d", i, v.t.Len(), v.t.Map(), len(v.want))
		}
		for id, s := range v.want {
			if got, ok := v.t.Get(id); !ok || got != s {
				t.Fatalf("version %d: Get(%q) = %v %v, want %v", i, id, got, ok, s)
			}
		}
		if _, ok := v.t.Get("absent"); ok {
			t.Fatalf("version %d: found an absent id", i)
		}
		for _, now := range []int64{0, 1, 500, 999, 2000} {
			got, want := map[string]int{"n0": 0, "n1": 0}, map[string]int{"n0": 0, "n1": 0} // n2 not a candidate
			v.t.countLive(now, got)
			for _, s := range v.want {
				if _, ok := want[s.Home]; ok && (now <= 0 || s.ExpiresMS > now) {
					want[s.Home]++
				}
			}
			if !maps.Equal(got, want) {
				t.Fatalf("version %d: live counts at %d = %v, want %v", i, now, got, want)
			}
		}
		fresh := SessionsFrom(v.want)
		if !reflect.DeepEqual(fresh, v.t) {
			t.Fatalf("version %d: a table built afresh is not DeepEqual to the derived one", i)
		}
		a, _ := json.Marshal(v.t)
		b, _ := json.Marshal(v.want)
		if string(a) != string(b) {
			t.Fatalf("version %d: encodes as %s, want %s", i, a, b)
		}
		var back SessionTable
		if err := json.Unmarshal(a, &back); err != nil || !reflect.DeepEqual(back, v.t) {
			t.Fatalf("version %d: decoded %v (%v)", i, back.Map(), err)
		}
	}
	if e := (SessionTable{}).DeleteFunc(func(Session) bool { return true }); e.Len() != 0 {
		t.Error("DeleteFunc on an empty table")
	}
}
