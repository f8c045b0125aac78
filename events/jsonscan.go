package events

import (
	"bytes"
	"encoding/json"
	"unicode/utf16"
	"unicode/utf8"
)

// The functions here walk only the top level of a JSON object, without recursion and
// without decoding values the command does not need, so a deeply nested or very wide
// body costs one linear pass. Call them only on input that json.Valid accepted; they
// still never index out of range on anything else.

// forEachMember calls fn with the raw key (the bytes between the quotes, escapes
// left as they are) and the raw value of each top-level member of the object in b,
// in order, until fn returns false. It reports false when b is not an object.
func forEachMember(b []byte, fn func(key, val []byte) bool) bool {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return true
	}
	for i < len(b) {
		if b[i] != '"' {
			return false
		}
		ks := i
		i = endOfString(b, i)
		if i-1 <= ks {
			return false
		}
		key := b[ks+1 : i-1]
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return false
		}
		vs := i
		i = endOfValue(b, i)
		if !fn(key, b[vs:i]) {
			return true
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] == '}' {
			return true
		}
		if b[i] != ',' {
			return false
		}
		i = skipWS(b, i+1)
	}
	return true
}

// offsetIn returns where sub, a subslice of b (such as a value forEachMember gave),
// starts in b.
func offsetIn(b, sub []byte) int { return cap(b) - cap(sub) }

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// endOfString returns the index just past the string that opens at b[i].
func endOfString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// endOfValue returns the index just past the value that starts at b[i]. Nesting is
// counted, not recursed into.
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = endOfString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default:
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return len(b)
	}
}

// keyIs reports whether the raw key (possibly escaped) spells name.
func keyIs(raw []byte, name string) bool {
	return string(decodeKey(raw)) == name
}

// decodeKey returns the raw key with its escapes decoded, so "a" and "\u0061" are
// the same key. It copies only when the key has escapes.
func decodeKey(raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	s, _ := unquote(raw) // json.Valid accepted it, so it decodes
	return []byte(s)
}

// unquote decodes the contents of a JSON string (raw without its quotes).
func unquote(raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	q := make([]byte, 0, len(raw)+2)
	q = append(q, '"')
	q = append(q, raw...)
	q = append(q, '"')
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return "", false
	}
	return s, true
}

// stringValue decodes a raw JSON value that must be a string. ok is false for any
// other JSON type.
func stringValue(val []byte) (string, bool) {
	if len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
		return "", false
	}
	return unquote(val[1 : len(val)-1])
}

// exactString is stringValue for values that must not change in decoding: it refuses
// invalid UTF-8 and lone surrogate escapes, which encoding/json would silently turn
// into U+FFFD (and so into a different identity).
func exactString(val []byte) (s string, ok bool) {
	if len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
		return "", false
	}
	raw := val[1 : len(val)-1]
	if !utf8.Valid(raw) || loneSurrogate(raw) {
		return "", false
	}
	return unquote(raw)
}

// loneSurrogate reports whether the string contents raw hold a \uXXXX escape of a
// UTF-16 surrogate that is not part of a valid pair.
func loneSurrogate(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r, ok := hex4(raw, i+1)
		if !ok {
			return true
		}
		i += 4
		if !utf16.IsSurrogate(r) {
			continue
		}
		if r >= 0xdc00 { // a low surrogate first
			return true
		}
		if i+2 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
			return true
		}
		r2, ok := hex4(raw, i+3)
		if !ok || r2 < 0xdc00 || r2 > 0xdfff {
			return true
		}
		i += 6
	}
	return false
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// keySet finds repeated top-level keys. Small objects (the normal case) are checked
// with a linear scan of a stack array; wide ones switch to a map.
type keySet struct {
	small [16][]byte
	n     int
	big   map[string]struct{}
}

// add records a decoded key (see decodeKey) and reports whether it was already
// present.
func (s *keySet) add(raw []byte) bool {
	if s.big != nil {
		if _, dup := s.big[string(raw)]; dup {
			return true
		}
		s.big[string(raw)] = struct{}{}
		return false
	}
	for _, k := range s.small[:s.n] {
		if bytes.Equal(k, raw) {
			return true
		}
	}
	if s.n < len(s.small) {
		s.small[s.n] = raw
		s.n++
		return false
	}
	s.big = make(map[string]struct{}, 2*len(s.small))
	for _, k := range s.small[:s.n] {
		s.big[string(k)] = struct{}{}
	}
	s.big[string(raw)] = struct{}{}
	return false
}
