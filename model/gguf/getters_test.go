package gguf

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestGetters(t *testing.T) {
	f, err := Parse("meta.gguf", buildFile(t, 3, 0, append(sampleKVs(),
		KV{"neg.int32", int32(-7)},
		KV{"big.uint64", uint64(1) << 63},
		KV{"a.uint32.big", []uint32{1, 1 << 31}},
		KV{"a.int64.small", []int64{-3, 4}},
		KV{"a.uint8.small", []uint8{9}},
	), nil))
	if err != nil {
		t.Fatal(err)
	}
	get := map[string]func(key string) (any, error){
		"String":   func(k string) (any, error) { return f.String(k) },
		"Uint":     func(k string) (any, error) { return f.Uint(k) },
		"Int":      func(k string) (any, error) { return f.Int(k) },
		"Float":    func(k string) (any, error) { return f.Float(k) },
		"Bool":     func(k string) (any, error) { return f.Bool(k) },
		"Strings":  func(k string) (any, error) { return f.Strings(k) },
		"Float32s": func(k string) (any, error) { return f.Float32s(k) },
		"Int32s":   func(k string) (any, error) { return f.Int32s(k) },
		"UintOr":   func(k string) (any, error) { return f.UintOr(k, 42) },
		"IntOr":    func(k string) (any, error) { return f.IntOr(k, -42) },
		"FloatOr":  func(k string) (any, error) { return f.FloatOr(k, 0.5) },
		"StringOr": func(k string) (any, error) { return f.StringOr(k, "def") },
		"BoolOr":   func(k string) (any, error) { return f.BoolOr(k, true) },
	}
	cases := []struct {
		getter, key string
		want        any   // when err is nil
		err         error // errors.Is target
		mention     string
	}{
		{"String", "general.architecture", "qwen3moe", nil, ""},
		{"String", "t.uint8", nil, ErrWrongType, "want string, found uint8"},
		{"String", "missing", nil, ErrMissingKey, `"missing"`},
		{"Uint", "t.uint8", uint64(200), nil, ""},
		{"Uint", "t.uint16", uint64(60000), nil, ""},
		{"Uint", "t.uint32", uint64(4000000000), nil, ""},
		{"Uint", "t.uint64", uint64(1) << 63, nil, ""},
		{"Uint", "neg.int32", nil, ErrWrongType, "negative"},
		{"Uint", "t.float32", nil, ErrWrongType, "want unsigned integer, found float32"},
		{"Uint", "missing", nil, ErrMissingKey, "meta.gguf"},
		{"Int", "t.int8", int64(-100), nil, ""},
		{"Int", "t.int16", int64(-30000), nil, ""},
		{"Int", "t.int32", int64(-2000000000), nil, ""},
		{"Int", "t.int64", int64(-1) << 62, nil, ""},
		{"Int", "t.uint32", int64(4000000000), nil, ""},
		{"Int", "big.uint64", nil, ErrWrongType, "overflows"},
		{"Int", "t.string", nil, ErrWrongType, "found string"},
		{"Float", "t.float32", float64(float32(-1.5e-7)), nil, ""},
		{"Float", "t.float64", 3.141592653589793, nil, ""},
		{"Float", "t.int32", float64(-2000000000), nil, ""},
		{"Float", "big.uint64", float64(1 << 63), nil, ""},
		{"Float", "t.bool.true", nil, ErrWrongType, "want number, found bool"},
		{"Bool", "t.bool.true", true, nil, ""},
		{"Bool", "t.bool.false", false, nil, ""},
		{"Bool", "t.uint8", nil, ErrWrongType, "want bool"},
		{"Strings", "a.string", []string{"<s>", "", "▁the", "\x00raw"}, nil, ""},
		{"Strings", "a.empty.string", []string{}, nil, ""},
		{"Strings", "a.int32", nil, ErrWrongType, "want array[string], found array[int32]"},
		{"Strings", "t.string", nil, ErrWrongType, "found string"},
		{"Float32s", "a.float32", []float32{0.5, -2, 1e30}, nil, ""},
		{"Float32s", "a.float64", []float32{1e-300, -0.25}, nil, ""},
		{"Float32s", "a.string", nil, ErrWrongType, "array[float32]"},
		{"Int32s", "a.int32", []int32{-1, 0, 1 << 30}, nil, ""},
		{"Int32s", "a.uint32", []int32{1, 2, 3}, nil, ""},
		{"Int32s", "a.int8", []int32{-128, 0, 127}, nil, ""},
		{"Int32s", "a.uint16", []int32{0, 65535}, nil, ""},
		{"Int32s", "a.int16", []int32{-32768, 32767}, nil, ""},
		{"Int32s", "a.int64.small", []int32{-3, 4}, nil, ""},
		{"Int32s", "a.uint8.small", []int32{9}, nil, ""},
		{"Int32s", "a.uint32.big", nil, ErrWrongType, "element 1"},
		{"Int32s", "a.uint64", nil, ErrWrongType, "overflows int32"},
		{"Int32s", "a.float32", nil, ErrWrongType, "found array[float32]"},
		{"Int32s", "a.nested", nil, ErrWrongType, "found array[array]"},
		{"UintOr", "missing", uint64(42), nil, ""},
		{"UintOr", "t.uint32", uint64(4000000000), nil, ""},
		{"UintOr", "t.string", nil, ErrWrongType, "t.string"},
		{"IntOr", "missing", int64(-42), nil, ""},
		{"FloatOr", "missing", 0.5, nil, ""},
		{"FloatOr", "t.float64", 3.141592653589793, nil, ""},
		{"FloatOr", "a.float32", nil, ErrWrongType, "found array[float32]"},
		{"StringOr", "missing", "def", nil, ""},
		{"StringOr", "general.architecture", "qwen3moe", nil, ""},
		{"StringOr", "t.bool.true", nil, ErrWrongType, "want string"},
		{"BoolOr", "missing", true, nil, ""},
		{"BoolOr", "t.bool.false", false, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.getter+"/"+tc.key, func(t *testing.T) {
			got, err := get[tc.getter](tc.key)
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("got %#v, want %#v", got, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("got %v, %v; want error %v", got, err, tc.err)
			}
			for _, s := range []string{"meta.gguf", tc.key, tc.mention} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestGettersCopy(t *testing.T) {
	f, err := Parse("m", buildFile(t, 3, 0, sampleKVs(), nil))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := f.Strings("a.string")
	s[0] = "changed"
	if again, _ := f.Strings("a.string"); again[0] != "<s>" {
		t.Error("Strings returned the File's own slice")
	}
	if !f.HasKey("t.uint8") || f.HasKey("missing") {
		t.Error("HasKey wrong")
	}
	if v, ok := f.Value("t.int8"); !ok || v != int8(-100) {
		t.Errorf("Value = %v, %v", v, ok)
	}
}
