package cluster

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// ParseKey decodes a cluster key given as hex or standard/URL base64 and
// checks that it is 16, 24 or 32 bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	try := []func(string) ([]byte, error){
		hex.DecodeString,
		base64.StdEncoding.DecodeString,
		base64.RawStdEncoding.DecodeString,
		base64.URLEncoding.DecodeString,
		base64.RawURLEncoding.DecodeString,
	}
	for _, dec := range try {
		if b, err := dec(s); err == nil {
			switch len(b) {
			case 16, 24, 32:
				return b, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: want 16, 24 or 32 bytes as hex or base64", ErrBadKey)
}

// ReadKeyFile reads a cluster key file holding the key as hex or base64.
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
