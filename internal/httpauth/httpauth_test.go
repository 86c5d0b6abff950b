package httpauth

import "testing"

func TestBearer(t *testing.T) {
	for _, tc := range []struct {
		h, key string
		ok     bool
	}{
		{"Bearer sk-1", "sk-1", true},
		{"bearer sk-1", "sk-1", true},
		{"  BEARER   sk-1  ", "sk-1", true},
		{"Basic sk-1", "", false},
		{"Bearer", "", false},
		{"", "", false},
		{"Bearersk-1", "", false},
	} {
		if key, ok := Bearer(tc.h); key != tc.key || ok != tc.ok {
			t.Errorf("Bearer(%q) = %q, %v; want %q, %v", tc.h, key, ok, tc.key, tc.ok)
		}
	}
}
