package gguf

import (
	"fmt"
	"math"
	"slices"
)

// HasKey reports whether the file has the metadata key.
func (f *File) HasKey(key string) bool {
	_, ok := f.keys[key]
	return ok
}

// Value returns the value of key as decoded (see KV), and whether it exists.
// Slices are shared with the File; do not modify them.
func (f *File) Value(key string) (any, bool) {
	i, ok := f.keys[key]
	if !ok {
		return nil, false
	}
	return f.KVs[i].Value, true
}

func (f *File) lookup(key string) (any, error) {
	v, ok := f.Value(key)
	if !ok {
		return nil, fmt.Errorf("gguf: %s: key %q: %w", f.Path, key, ErrMissingKey)
	}
	return v, nil
}

func (f *File) wrongType(key, want string, v any, why error) error {
	found := describe(v)
	if why != nil && why != errNotInteger {
		return fmt.Errorf("gguf: %s: key %q: %w: want %s, found %s: %v", f.Path, key, ErrWrongType, want, found, why)
	}
	return fmt.Errorf("gguf: %s: key %q: %w: want %s, found %s", f.Path, key, ErrWrongType, want, found)
}

// String returns the string value of key.
func (f *File) String(key string) (string, error) {
	v, err := f.lookup(key)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", f.wrongType(key, "string", v, nil)
	}
	return s, nil
}

// Uint returns an integer value of key as uint64. Any unsigned type is
// accepted, and signed types when the value is not negative.
func (f *File) Uint(key string) (uint64, error) {
	v, err := f.lookup(key)
	if err != nil {
		return 0, err
	}
	u, err := toUint(v)
	if err != nil {
		return 0, f.wrongType(key, "unsigned integer", v, err)
	}
	return u, nil
}

// Int returns an integer value of key as int64. Any integer type is
// accepted when the value fits.
func (f *File) Int(key string) (int64, error) {
	v, err := f.lookup(key)
	if err != nil {
		return 0, err
	}
	i, err := toInt(v)
	if err != nil {
		return 0, f.wrongType(key, "integer", v, err)
	}
	return i, nil
}

// Float returns a float32, float64 or integer value of key as float64.
func (f *File) Float(key string) (float64, error) {
	v, err := f.lookup(key)
	if err != nil {
		return 0, err
	}
	switch x := v.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	if i, err := toInt(v); err == nil {
		return float64(i), nil
	}
	if u, err := toUint(v); err == nil {
		return float64(u), nil
	}
	return 0, f.wrongType(key, "number", v, nil)
}

// Bool returns the bool value of key.
func (f *File) Bool(key string) (bool, error) {
	v, err := f.lookup(key)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, f.wrongType(key, "bool", v, nil)
	}
	return b, nil
}

// Strings returns a copy of the string array value of key.
func (f *File) Strings(key string) ([]string, error) {
	v, err := f.lookup(key)
	if err != nil {
		return nil, err
	}
	s, ok := v.([]string)
	if !ok {
		return nil, f.wrongType(key, "array[string]", v, nil)
	}
	return slices.Clone(s), nil
}

// Float32s returns a copy of a float32 (or float64, narrowed) array value
// of key.
func (f *File) Float32s(key string) ([]float32, error) {
	v, err := f.lookup(key)
	if err != nil {
		return nil, err
	}
	switch s := v.(type) {
	case []float32:
		return slices.Clone(s), nil
	case []float64:
		out := make([]float32, len(s))
		for i, x := range s {
			out[i] = float32(x)
		}
		return out, nil
	}
	return nil, f.wrongType(key, "array[float32]", v, nil)
}

// Int32s returns an integer array value of key converted to int32. Arrays
// of any integer type are accepted when every element fits.
func (f *File) Int32s(key string) ([]int32, error) {
	v, err := f.lookup(key)
	if err != nil {
		return nil, err
	}
	var out []int32
	switch s := v.(type) {
	case []int32:
		return slices.Clone(s), nil
	case []uint8:
		out = convert(s)
	case []int8:
		out = convert(s)
	case []uint16:
		out = convert(s)
	case []int16:
		out = convert(s)
	case []uint32:
		for i, x := range s {
			if x > math.MaxInt32 {
				return nil, f.wrongType(key, "array[int32]", v, fmt.Errorf("element %d = %d overflows int32", i, x))
			}
		}
		out = convert(s)
	case []int64:
		for i, x := range s {
			if x < math.MinInt32 || x > math.MaxInt32 {
				return nil, f.wrongType(key, "array[int32]", v, fmt.Errorf("element %d = %d overflows int32", i, x))
			}
		}
		out = convert(s)
	case []uint64:
		for i, x := range s {
			if x > math.MaxInt32 {
				return nil, f.wrongType(key, "array[int32]", v, fmt.Errorf("element %d = %d overflows int32", i, x))
			}
		}
		out = convert(s)
	default:
		return nil, f.wrongType(key, "array[int32]", v, nil)
	}
	return out, nil
}

func convert[T uint8 | int8 | uint16 | int16 | uint32 | int64 | uint64](s []T) []int32 {
	out := make([]int32, len(s))
	for i, x := range s {
		out[i] = int32(x)
	}
	return out
}

// UintOr is Uint, returning def when key is absent.
func (f *File) UintOr(key string, def uint64) (uint64, error) {
	if !f.HasKey(key) {
		return def, nil
	}
	return f.Uint(key)
}

// IntOr is Int, returning def when key is absent.
func (f *File) IntOr(key string, def int64) (int64, error) {
	if !f.HasKey(key) {
		return def, nil
	}
	return f.Int(key)
}

// FloatOr is Float, returning def when key is absent.
func (f *File) FloatOr(key string, def float64) (float64, error) {
	if !f.HasKey(key) {
		return def, nil
	}
	return f.Float(key)
}

// StringOr is String, returning def when key is absent.
func (f *File) StringOr(key, def string) (string, error) {
	if !f.HasKey(key) {
		return def, nil
	}
	return f.String(key)
}

// BoolOr is Bool, returning def when key is absent.
func (f *File) BoolOr(key string, def bool) (bool, error) {
	if !f.HasKey(key) {
		return def, nil
	}
	return f.Bool(key)
}

var errNotInteger = fmt.Errorf("not an integer")

// toUint converts an unsigned, or non-negative signed, integer to uint64.
func toUint(v any) (uint64, error) {
	var i int64
	switch x := v.(type) {
	case uint8:
		return uint64(x), nil
	case uint16:
		return uint64(x), nil
	case uint32:
		return uint64(x), nil
	case uint64:
		return x, nil
	case int8:
		i = int64(x)
	case int16:
		i = int64(x)
	case int32:
		i = int64(x)
	case int64:
		i = x
	default:
		return 0, errNotInteger
	}
	if i < 0 {
		return 0, fmt.Errorf("value %d is negative", i)
	}
	return uint64(i), nil
}

// toInt converts any integer that fits to int64.
func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("value %d overflows int64", x)
		}
		return int64(x), nil
	}
	return 0, errNotInteger
}
