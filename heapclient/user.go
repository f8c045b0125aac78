package heapclient

import (
	"strconv"
	"unicode/utf8"
)

// User names one Heap user: by Identity, or by UserID when Identity is empty.
type User struct {
	Identity string
	UserID   uint64
}

// MarshalJSON gives {"identity":"..."} or {"user_id":123}, the user id as an exact
// JSON integer. It never fails.
func (u User) MarshalJSON() ([]byte, error) {
	return appendUser(nil, u), nil
}

// appendUser appends u's JSON form. It is the one encoder of users, used for each
// user of a 10,000-user batch, so it avoids reflection and allocation.
func appendUser(b []byte, u User) []byte {
	if u.Identity == "" {
		b = append(b, `{"user_id":`...)
		b = strconv.AppendUint(b, u.UserID, 10)
		return append(b, '}')
	}
	b = append(b, `{"identity":`...)
	b = appendJSONString(b, u.Identity)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaping as encoding/json does
// (without HTML escaping); invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
