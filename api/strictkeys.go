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

// dropMiscased returns b without the object keys, at any depth, that name a
// field of the type t decodes them into only up to case. It returns b itself
// when there are none (the usual case, found in one pass over b) or when b
// is not valid JSON (the decoder reports that).
func dropMiscased(b []byte, t reflect.Type) []byte {
	tf := fieldsOf(t)
	if tf == nil || !hasFoldedKey(b, tf.all) {
		return b
	}
	if out, changed := dropIn(b, t); changed {
		return out
	}
	return b
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

// dropIn is dropMiscased's walk: the value b decoded into t.
func dropIn(b []byte, t reflect.Type) ([]byte, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == messageListType {
		t = reflect.SliceOf(chatMessageType)
	}
	switch t.Kind() {
	case reflect.Struct:
		tf := fieldsOf(t)
		if tf == nil {
			return b, false
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return b, false
		}
		changed := false
		for k, v := range m {
			if ft, ok := tf.exact[k]; ok {
				if nv, c := dropIn(v, ft); c {
					m[k], changed = nv, true
				}
				continue
			}
			for n := range tf.exact {
				if strings.EqualFold(k, n) {
					delete(m, k)
					changed = true
					break
				}
			}
		}
		if !changed {
			return b, false
		}
		out, err := json.Marshal(m)
		return out, err == nil
	case reflect.Slice, reflect.Array:
		if t == rawMessageType || t.Elem().Kind() == reflect.Uint8 || fieldsOf(t.Elem()) == nil {
			return b, false
		}
		var raws []json.RawMessage
		if json.Unmarshal(b, &raws) != nil {
			return b, false
		}
		changed := false
		for i, v := range raws {
			if nv, c := dropIn(v, t.Elem()); c {
				raws[i], changed = nv, true
			}
		}
		if !changed {
			return b, false
		}
		out, err := json.Marshal(raws)
		return out, err == nil
	}
	return b, false
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
