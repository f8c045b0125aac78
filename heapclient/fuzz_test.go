package heapclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/heapdel/heapdel/internal/jsonx"
)

// FuzzRedact checks the package's promise that no error holds a secret: whatever
// Heap answers, for whatever identities, user id, API key and token (and the key
// as Basic auth sends it, base64 of app:key), and however Heap echoes them (as
// sent, identities in another case by Unicode simple folding, percent-encoded
// or JSON-escaped, by the usual encoders), the message that heapMessage keeps holds
// none of them, is valid UTF-8 without control characters and at most maxMessage
// bytes plus "…", and classify's error adds nothing to it but fixed text.
//
// text is Heap's message; echo, read in pairs (which secret in which encoding,
// how far on in text), splices echoes into it; shape says how the message sits in
// the answer body, the last shape being text itself as the whole body.
func FuzzRedact(f *testing.F) {
	f.Add("user not found", uint8(1), uint16(300), "Alice@Example.com", "Bob Smith", uint64(8512376125342183), "sim-key-SECRET-7f3a9c", "tok-5d1e0b", []byte{0, 5, 6, 3, 12, 4})
	f.Add("invalid users: ,  (batch )", uint8(0), uint16(22), "o'hara+tag@example.org", "ñoño@example.es", uint64(1234), "KEY-abc", "tok123", []byte{1, 15, 7, 2, 22, 3, 9, 0})
	f.Add(`{"err":{"message":"bad `, uint8(4), uint16(29), "dup@example.com", "x\x01y\xffz", uint64(18446744073709551615), "k y+", "t%41", []byte{0, 12, 50, 0})
	f.Add("rate limited", uint8(1), uint16(329), "\U0001F600emoji", `back\slash"quote`, uint64(1000), "", "", []byte{3, 0, 40, 1, 33, 1})
	f.Add("GET /v0/users?identity=", uint8(2), uint16(1000), "alice@example.com", "", uint64(0), "", "", []byte{5, 23})
	f.Add(strings.Repeat("x", 190)+" ", uint8(1), uint16(300), "alice@example.com", "", uint64(4242), "", "", []byte{0, 191, 2, 0})
	// A proxy's page echoing Basic credentials; an identity with spaces in
	// quotes; Unicode case variants of an identity, typed into the text.
	f.Add("407 Proxy Authentication Required: Authorization: Basic  Bearer ", uint8(4), uint16(307), "", "", uint64(0), "KEY-~~~~", "tok-5d1e0b", []byte{2, 56, 0, 64, 3, 40, 1, 63})
	f.Add(`user "" not found, nor ''`, uint8(0), uint16(300), "Jane Q Doe", " padded id ", uint64(0), "", "", []byte{0, 6, 2, 22, 1, 24})
	f.Add("users ÄLICE@X.DE, \u00c4lice@x.de, STRAẞE 5 and KELVIN", uint8(1), uint16(300), "älice@x.de", "Straße 5", uint64(0), "", "", []byte{})

	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, text string, shape uint8, code uint16, identity1, identity2 string,
		userID uint64, key, token string, echo []byte) {
		var red redactor
		var secrets []fuzzSecret
		for _, id := range []string{identity1, identity2} {
			if s, ok := newFuzzSecret(id, true); ok {
				red.users = append(red.users, User{Identity: id})
				secrets = append(secrets, s)
			}
		}
		if userID >= 1000 { // four digits or more: never the three of the status code
			red.users = append(red.users, User{UserID: userID})
			id := strconv.FormatUint(userID, 10)
			secrets = append(secrets, fuzzSecret{id: id, forms: []string{id, jsonAll(id, false), jsonAll(id, true)}, number: true})
		}
		for _, s := range []string{key, token} {
			if fs, ok := newFuzzSecret(s, false); ok {
				red.secrets = append(red.secrets, s)
				secrets = append(secrets, fs)
			}
		}
		if _, ok := newFuzzSecret(key, false); ok {
			// As exchange does: the key as a proxy may echo Basic auth.
			for _, b := range secretsOf(fuzzApp, key, "")[2:] {
				red.secrets = append(red.secrets, b)
				if fs, ok := newFuzzSecret(b, false); ok {
					secrets = append(secrets, fs)
				}
			}
		}

		msg := spliceEchoes(text, echo, secrets)
		q, _ := json.Marshal(msg) // never fails for a string
		var body string
		switch shape % 5 {
		case 0:
			body = `{"err":{"message":` + string(q) + `}}`
		case 1:
			body = `{"message":` + string(q) + `}`
		case 2:
			body = `{"error":` + string(q) + `}`
		case 3:
			body = `{"err":` + string(q) + `}`
		default:
			body = msg
		}
		a := answer{code: 100 + int(code)%500, body: []byte(body)}
		endpoint := []string{epAuth, epDeletion, epStatus}[int(code)/500%3]

		got := heapMessage(a, red)
		if !utf8.ValidString(got) {
			t.Fatalf("message %q is not valid UTF-8", got)
		}
		if len(got) > maxMessage+len("…") {
			t.Fatalf("message is %d bytes: %q", len(got), got)
		}
		if strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("message %q holds a control character", got)
		}
		for _, s := range secrets {
			if f, ok := s.leaked(got, ""); ok {
				t.Fatalf("message %q shows %q (secret %q) from body %q", got, f, s.id, body)
			}
		}

		err := classify(endpoint, a, now, 5*time.Minute, red)
		if err == nil {
			return
		}
		e := err.Error()
		if !utf8.ValidString(e) {
			t.Fatalf("error %q is not valid UTF-8", e)
		}
		// What the error adds to the message must not coincide with a secret: only
		// a form absent from that fixed text counts. A form with a space could
		// straddle the ": " before the message; the message alone is checked above.
		fixed := strings.Replace(e, got, "", 1)
		for _, s := range secrets {
			if f, ok := s.leaked(e, fixed); ok {
				t.Fatalf("error %q shows %q (secret %q) from body %q", e, f, s.id, body)
			}
		}
	})
}

// fuzzApp is the app id whose Basic credentials FuzzRedact hides with the key.
const fuzzApp = "sim-app"

// A fuzzSecret is one identity, user id, API key or token, and the forms in which
// Heap might echo it.
type fuzzSecret struct {
	id     string   // as given to the redactor
	forms  []string // as Heap might echo it, forms[0] as sent
	folded bool     // an identity: redacted in any case (Unicode simple folding)
	number bool     // a user id: redacted as a whole number
}

// newFuzzSecret returns s's forms, or false if s is too plain to stand for a
// secret: shorter than 4 bytes, one byte repeated, or able to coincide with what
// sanitize writes itself ("[redacted]", "…").
func newFuzzSecret(s string, folded bool) (fuzzSecret, bool) {
	c := string([]rune(s)) // as Heap received it: invalid UTF-8 as U+FFFD
	if len(c) < 4 || strings.Count(c, c[:1]) == len(c) || strings.ContainsAny(c, "[]…") ||
		containsFold("redacted", c) {
		return fuzzSecret{}, false
	}
	qe := url.QueryEscape(c)
	var forms []string
	for _, f := range []string{
		c,
		qe,
		strings.ReplaceAll(qe, "+", "%20"), // RFC 3986, as Python's quote(s, safe="")
		lowerHex.ReplaceAllStringFunc(qe, strings.ToLower),
		url.PathEscape(c),
		jsonString(c),
		unquote(jsonx.AppendString(nil, c)),
		jsonASCII(c),
		jsonAll(c, false),
		jsonAll(c, true),
	} {
		if !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	return fuzzSecret{id: s, forms: forms, folded: folded}, true
}

var lowerHex = regexp.MustCompile(`%[0-9A-F]{2}`)

// jsonString is c JSON-escaped by encoding/json (HTML characters escaped too),
// without the quotes.
func jsonString(c string) string {
	b, _ := json.Marshal(c)
	return unquote(b)
}

// unquote drops the quotes around a JSON string.
func unquote(b []byte) string { return string(b[1 : len(b)-1]) }

// jsonASCII is c JSON-escaped with every non-ASCII character as \uXXXX, as
// Python's json.dumps does by default.
func jsonASCII(c string) string {
	var b strings.Builder
	for _, r := range c {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r >= 0x7f:
			writeU(&b, r, false)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// jsonAll is c with every character as \uXXXX, as some encoders escape '@'.
func jsonAll(c string, upper bool) string {
	var b strings.Builder
	for _, r := range c {
		writeU(&b, r, upper)
	}
	return b.String()
}

func writeU(b *strings.Builder, r rune, upper bool) {
	format := `\u%04x`
	if upper {
		format = `\u%04X`
	}
	if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
		fmt.Fprintf(b, format+format, r1, r2)
		return
	}
	fmt.Fprintf(b, format, r)
}

// spliceEchoes inserts into text, for each pair of bytes of echo (at most 8), one
// form of one secret, quoted: an echoed value stands apart from the text around
// it, so that an escape there cannot swallow the value's first or last byte.
func spliceEchoes(text string, echo []byte, secrets []fuzzSecret) string {
	if len(secrets) == 0 {
		return text
	}
	var b strings.Builder
	for n := 0; len(echo) >= 2 && n < 8; n++ {
		which, at := int(echo[0]), int(echo[1])
		echo = echo[2:]
		s := secrets[which%len(secrets)]
		at %= len(text) + 1
		b.WriteString(text[:at])
		text = text[at:]
		b.WriteString(`"` + s.forms[which/len(secrets)%len(s.forms)] + `"`)
	}
	b.WriteString(text)
	return b.String()
}

// leaked returns a form of s that out shows and fixed does not, as out shows it:
// control characters blanked. A user id shows only as a whole number, not cut
// short by the final "…".
func (s fuzzSecret) leaked(out, fixed string) (string, bool) {
	blank := func(x string) string {
		return strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, x)
	}
	contains := strings.Contains
	if s.folded {
		contains = containsFold
	}
	for i, f := range s.forms {
		f = blank(f)
		if fixed != "" && (contains(fixed, f) || strings.Contains(f, " ")) {
			continue
		}
		if i == 0 && s.number {
			if wholeNumber(out, f) {
				return f, true
			}
			continue
		}
		if contains(out, f) {
			return f, true
		}
	}
	return "", false
}

// containsFold reports whether out holds f in any case: strings.EqualFold on
// each stretch of out as many characters long as f.
func containsFold(out, f string) bool {
	n := utf8.RuneCountInString(f)
	for i := 0; i < len(out); {
		j := i
		for k := 0; k < n && j < len(out); k++ {
			_, size := utf8.DecodeRuneInString(out[j:])
			j += size
		}
		if strings.EqualFold(out[i:j], f) {
			return true
		}
		_, size := utf8.DecodeRuneInString(out[i:])
		i += size
	}
	return false
}

// wholeNumber reports whether out shows n as a run of digits of its own, and not
// as the start of a longer number cut short by the final "…".
func wholeNumber(out, n string) bool {
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	for i := 0; i < len(out); {
		if !digit(out[i]) {
			i++
			continue
		}
		j := i
		for j < len(out) && digit(out[j]) {
			j++
		}
		if out[i:j] == n && out[j:] != "…" {
			return true
		}
		i = j
	}
	return false
}

// FuzzAppendUser checks the encoder of users against encoding/json: the same
// bytes (without HTML escaping), valid JSON, and a round trip that gives back
// the identity (invalid UTF-8 as U+FFFD, byte by byte) or the exact user id.
func FuzzAppendUser(f *testing.F) {
	f.Add("alice@example.com", uint64(0))
	f.Add("", uint64(18446744073709551615))
	f.Add("", uint64(0))
	f.Add("\"\\/\b\f\n\r\t\x00\x1f\x7f<>&\u2028\u2029", uint64(1))
	f.Add("a\xffb\xc3\xed\xa0\x80\U0001F600", uint64(2))

	f.Fuzz(func(t *testing.T, identity string, userID uint64) {
		u := User{Identity: identity, UserID: userID}
		prefix := []byte(`{"users":[`)
		out := appendUser(bytes.Clone(prefix), u)
		if !bytes.HasPrefix(out, prefix) {
			t.Fatalf("appendUser changed what came before: %q", out)
		}
		got := out[len(prefix):]
		if !json.Valid(got) {
			t.Fatalf("appendUser(%q, %d) = %q, not JSON", identity, userID, got)
		}
		if m, _ := u.MarshalJSON(); !bytes.Equal(m, got) {
			t.Fatalf("MarshalJSON = %q, appendUser %q", m, got)
		}

		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if identity == "" {
			_ = enc.Encode(struct {
				UserID uint64 `json:"user_id"`
			}{userID})
		} else {
			_ = enc.Encode(struct {
				Identity string `json:"identity"`
			}{identity})
		}
		if w := bytes.TrimSuffix(want.Bytes(), []byte("\n")); !bytes.Equal(got, w) {
			t.Fatalf("appendUser(%q, %d) = %q, encoding/json %q", identity, userID, got, w)
		}

		var back struct {
			Identity *string     `json:"identity"`
			UserID   json.Number `json:"user_id"`
		}
		dec := json.NewDecoder(bytes.NewReader(got))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		if err := dec.Decode(&back); err != nil {
			t.Fatalf("decode %q: %v", got, err)
		}
		if identity == "" {
			if back.Identity != nil || back.UserID.String() != strconv.FormatUint(userID, 10) {
				t.Fatalf("%q decodes to user id %q, want %d", got, back.UserID, userID)
			}
			return
		}
		if back.Identity == nil || back.UserID != "" {
			t.Fatalf("%q decodes to %+v, want an identity only", got, back)
		}
		if want := string([]rune(identity)); *back.Identity != want { // each byte of invalid UTF-8 as U+FFFD
			t.Fatalf("%q decodes to identity %q, want %q", got, *back.Identity, want)
		}
		if utf8.ValidString(identity) && *back.Identity != identity {
			t.Fatalf("valid identity %+q came back as %+q", identity, *back.Identity)
		}
	})
}
