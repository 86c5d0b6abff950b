package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// encoding/json matches an object's keys to struct fields without regard to
// case, so {"max_tokens":2,"Max_tokens":-1} set max_tokens to −1 and
// {"MODEL":…,"PROMPT":…} was a valid request. OpenAI's API, JSON Schema and
// every other server match keys exactly; a key that names a field only up
// to case is an unknown key here, ignored like any other. dropMiscased
// takes such keys out of a body before it is decoded.

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
	chatMessageType = reflect.TypeFor[chatMessage]()
	contentPartType = reflect.TypeFor[contentPart]()
	messageListType = reflect.TypeFor[messageList]()
	genParamsType   = reflect.TypeFor[genParams]()

	// fieldSets caches, per type, the exact names of its JSON fields
	// (reflect.Type → *typeFields).
	fieldSets sync.Map
)

// typeFields is what dropMiscased needs of a struct type.
type typeFields struct {
	exact map[string]reflect.Type // JSON name → field type (embedded structs' fields included)
	all   []string                // every JSON name in the types reachable from it
}

// dropMiscased returns b with the object keys, at any depth, that name a
// field of the type t decodes them into only up to case renamed out of the
// way ("Max_tokens" becomes "~Max_tokens", which no field matches), so the
// decoder ignores them like any unknown key; every other byte stays as it
// was (duplicate keys still merge as encoding/json merges them). It returns
// b itself when there are none (the usual case, found in one pass over b)
// or when b is not valid JSON (the decoder reports that).
func dropMiscased(b []byte, t reflect.Type) []byte {
	tf := fieldsOf(t)
	if tf == nil || !hasFoldedKey(b, tf.all) {
		return b
	}
	var at []int
	if !json.Valid(b) || dropIn(b, 0, t, &at) != nil || len(at) == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+len(at))
	prev := 0
	for _, i := range at { // ascending: the walk goes through b in order
		out = append(append(out, b[prev:i]...), '~')
		prev = i
	}
	return append(out, b[prev:]...)
}

// hasFoldedKey reports whether b has an object key that is not plain lower
// case ASCII and equals one of names up to case: a key dropIn might drop.
// Keys are the strings followed by a colon; the scan skips from quote to
// quote (memchr speed), so a long prompt costs little.
func hasFoldedKey(b []byte, names []string) bool {
	for i := 0; i < len(b); {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return false
		}
		start := i + q + 1
		// The string's end: the next quote not escaped by an odd run of
		// backslashes.
		end := start
		for {
			e := bytes.IndexByte(b[end:], '"')
			if e < 0 {
				return false
			}
			end += e
			bs := 0
			for k := end - 1; k >= start && b[k] == '\\'; k-- {
				bs++
			}
			if bs%2 == 0 {
				break
			}
			end++
		}
		i = end + 1
		k := i
		for k < len(b) && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r') {
			k++
		}
		if k >= len(b) || b[k] != ':' {
			continue
		}
		key := b[start:end]
		plain := true
		for _, c := range key {
			if c >= 'A' && c <= 'Z' || c >= utf8.RuneSelf || c == '\\' {
				plain = false
				break
			}
		}
		if plain {
			continue
		}
		ks := string(key)
		if bytes.IndexByte(key, '\\') >= 0 {
			if json.Unmarshal(b[start-1:end+1], &ks) != nil {
				continue
			}
		}
		for _, n := range names {
			if ks != n && strings.EqualFold(ks, n) {
				return true
			}
		}
	}
	return false
}

// dropIn is dropMiscased's walk over the value b (at offset base of the
// body) decoded into t: it appends to at the offset just inside the opening
// quote of each key to rename.
func dropIn(b []byte, base int, t reflect.Type, at *[]int) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == messageListType {
		t = reflect.SliceOf(chatMessageType)
	}
	var tf *typeFields
	switch t.Kind() {
	case reflect.Struct:
		if tf = fieldsOf(t); tf == nil {
			return nil
		}
	case reflect.Slice, reflect.Array:
		if t == rawMessageType || fieldsOf(t.Elem()) == nil {
			return nil
		}
	default:
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	open, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := open.(json.Delim); !ok || (tf != nil) != (d == '{') {
		return nil // another kind of value: the decoder says what is wrong
	}
	// value decodes the next value, recursing into it as ft.
	value := func(ft reflect.Type) error {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		end := int(dec.InputOffset())
		return dropIn(raw, base+end-len(raw), ft, at)
	}
	for dec.More() {
		if tf == nil {
			if err := value(t.Elem()); err != nil {
				return err
			}
			continue
		}
		off := int(dec.InputOffset())
		key, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := key.(string)
		if ft, ok := tf.exact[k]; ok {
			if err := value(ft); err != nil {
				return err
			}
			continue
		}
		for n := range tf.exact {
			if strings.EqualFold(k, n) {
				*at = append(*at, base+off+bytes.IndexByte(b[off:], '"')+1)
				break
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// fieldsOf is the cached field set of t (through pointers, slices and
// arrays to a struct), or nil when t decodes no struct of ours: a struct
// with its own UnmarshalJSON decodes its keys itself.
func fieldsOf(t reflect.Type) *typeFields {
	for {
		switch {
		case t == messageListType:
			t = chatMessageType
		case t.Kind() == reflect.Pointer || (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && t != rawMessageType:
			t = t.Elem()
			continue
		}
		break
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	if v, ok := fieldSets.Load(t); ok {
		return v.(*typeFields)
	}
	tf := &typeFields{exact: map[string]reflect.Type{}}
	collectFields(t, tf)
	seen := map[string]bool{}
	add := func(names ...string) {
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				tf.all = append(tf.all, n)
			}
		}
	}
	for n, ft := range tf.exact {
		add(n)
		if sub := fieldsOf(ft); sub != nil {
			add(sub.all...)
		}
	}
	if t == chatMessageType { // its content's parts are decoded by messageContent
		add(fieldsOf(contentPartType).all...)
	}
	fieldSets.Store(t, tf)
	return tf
}

// collectFields adds t's JSON fields to tf, those of embedded structs
// without a tag as encoding/json flattens them.
func collectFields(t reflect.Type, tf *typeFields) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			collectFields(f.Type, tf)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		tf.exact[name] = f.Type
	}
}
