package consumer

import (
	"regexp"
	"strings"
	"testing"
)

// FuzzJobKey checks that any request id (or Heap deletion request id) maps to a
// valid key-value key, the same one every time, and that the mapping is one to
// one: the key decodes back to the id, two ids never share a key, and no key is
// a members key ("m.<key>") of another id.
func FuzzJobKey(f *testing.F) {
	f.Add("dsr:2026.1", "dsr:2026=2E1")
	f.Add("r1", "R1")
	f.Add("a.b", "a=2Eb")
	f.Add("m.x", "x")
	f.Add("=3A", ":")
	f.Add("ñ/é\x00\xff", "..")
	f.Add("-_", "*>")

	f.Fuzz(func(t *testing.T, a, b string) {
		ka := JobKey(a)
		if ka != JobKey(a) {
			t.Fatalf("JobKey(%q) differs between calls", a)
		}
		if a != "" && (!kvKeyValid(ka) || !kvKeyValid(membersKey(a))) {
			t.Fatalf("JobKey(%q) = %q, members key %q: not a valid key", a, ka, membersKey(a))
		}
		if back, ok := unJobKey(ka); !ok || back != a {
			t.Fatalf("JobKey(%q) = %q decodes to %q, %v", a, ka, back, ok)
		}
		kb := JobKey(b)
		if a != b && ka == kb {
			t.Fatalf("JobKey(%q) = JobKey(%q) = %q", a, b, ka)
		}
		if ka == membersKey(b) {
			t.Fatalf("JobKey(%q) = membersKey(%q) = %q", a, b, ka)
		}
	})
}

// validKey is the rule of nats.go's jetstream key-value store (keyValid in
// jetstream/kv.go, v1.55.0): a Put or Get with another key fails with
// ErrInvalidKey.
var validKey = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

func kvKeyValid(key string) bool {
	if len(key) == 0 || key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") {
		return false
	}
	return validKey.MatchString(key)
}

// unJobKey is the inverse of JobKey; ok is false for a string JobKey never gives.
func unJobKey(key string) (id string, ok bool) {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		case c == '=' && i+2 < len(key) && isUpperHex(key[i+1]) && isUpperHex(key[i+2]):
			b.WriteByte(unhexUpper(key[i+1])<<4 | unhexUpper(key[i+2]))
			i += 2
		default:
			return "", false
		}
	}
	return b.String(), true
}

func isUpperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhexUpper(c byte) byte {
	if c >= 'A' {
		return c - 'A' + 10
	}
	return c - '0'
}
