package heapclient

import (
	"encoding/base64"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		endpoint   string
		code       int
		header     http.Header
		body       string
		want       error // nil: success
		reason     string
		retryAfter time.Duration
	}{
		{epDeletion, 201, nil, "", nil, "", 0},
		{epStatus, 200, nil, "", nil, "", 0},
		{epDeletion, 429, nil, "", ErrRetryable, reasonRateLimited, 0},
		{epDeletion, 429, http.Header{"Retry-After": {"7"}}, "", ErrRetryable, reasonRateLimited, 7 * time.Second},
		{epAuth, 503, http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, "", ErrRetryable, reasonServerError, 90 * time.Second},
		{epDeletion, 429, http.Header{"Retry-After": {"86400"}}, "", ErrRetryable, reasonRateLimited, 5 * time.Minute},
		{epStatus, 503, http.Header{"Retry-After": {"4294967295"}}, "", ErrRetryable, reasonServerError, 5 * time.Minute},
		{epAuth, 429, http.Header{"Retry-After": {now.AddDate(100, 0, 0).Format(http.TimeFormat)}}, "", ErrRetryable, reasonRateLimited, 5 * time.Minute},
		{epStatus, 500, nil, "", ErrRetryable, reasonServerError, 0},
		{epStatus, 599, nil, "", ErrRetryable, reasonServerError, 0},
		{epDeletion, 408, nil, "", ErrRetryable, reasonTimeout, 0},
		{epDeletion, 401, nil, "", ErrUnauthorized, "", 0},
		{epAuth, 401, nil, "", ErrUnauthorized, "", 0},
		{epStatus, 404, nil, "", ErrNotFound, "", 0},
		{epDeletion, 404, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 404, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 405, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 400, nil, `{"err":{"message":"m"}}`, ErrRejected, "", 0},
		{epDeletion, 403, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 413, nil, "", ErrRejected, "", 0},
		{epDeletion, 422, nil, "", ErrRejected, "", 0},
		// Only user_deletion's 400, 413 and 422 are about the users: everything
		// else is about heapdel's setup, and must never fail a deletion.
		{epDeletion, 301, http.Header{"Location": {"https://www.heapanalytics.com/api/public/v0/user_deletion"}}, "", ErrMisconfigured, "", 0},
		{epDeletion, 302, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 307, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 308, nil, "", ErrMisconfigured, "", 0},
		{epStatus, 301, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 302, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 402, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 407, nil, `{"message":"proxy authentication required"}`, ErrMisconfigured, "", 0},
		{epDeletion, 409, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 410, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 411, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 415, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 418, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 451, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 499, nil, "", ErrMisconfigured, "", 0},
		{epDeletion, 100, nil, "", ErrMisconfigured, "", 0},
		{epStatus, 400, nil, "", ErrMisconfigured, "", 0},
		{epStatus, 403, nil, "", ErrMisconfigured, "", 0},
		{epStatus, 407, nil, "", ErrMisconfigured, "", 0},
		{epStatus, 410, nil, "", ErrMisconfigured, "", 0},
		{epStatus, 422, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 400, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 403, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 405, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 407, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 413, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 422, nil, "", ErrMisconfigured, "", 0},
		{epAuth, 408, nil, "", ErrRetryable, reasonTimeout, 0},
		{epAuth, 429, nil, "", ErrRetryable, reasonRateLimited, 0},
		{epAuth, 502, nil, "", ErrRetryable, reasonServerError, 0},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint+"/"+strconv.Itoa(tt.code)+"_"+http.StatusText(tt.code), func(t *testing.T) {
			err := classify(tt.endpoint, answer{code: tt.code, header: tt.header, body: []byte(tt.body)}, now, 5*time.Minute, redactor{})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			for _, other := range []error{ErrRetryable, ErrUnauthorized, ErrNotFound, ErrRejected, ErrMisconfigured} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("%v is also %v", err, other)
				}
			}
			if tt.want == ErrMisconfigured && !strings.Contains(err.Error(), "HTTP "+strconv.Itoa(tt.code)) {
				t.Errorf("error %q does not name the status code", err)
			}
			if !strings.HasPrefix(err.Error(), "heap "+tt.endpoint+": ") {
				t.Errorf("error %q does not name the endpoint", err)
			}
			var re *RetryableError
			if errors.As(err, &re) {
				if re.reason != tt.reason || re.RetryAfter != tt.retryAfter || re.Code != tt.code || re.Endpoint != tt.endpoint {
					t.Errorf("got %+v, want reason %s, RetryAfter %s", re, tt.reason, tt.retryAfter)
				}
			}
		})
	}
}

func TestClassifyRedirectTarget(t *testing.T) {
	red := redactor{secrets: []string{"tok-SECRET"}}
	h := http.Header{"Location": {"https://www.heapanalytics.com/api/public/v0/user_deletion?token=tok-SECRET"}}
	err := classify(epDeletion, answer{code: 301, header: h}, time.Now(), 5*time.Minute, red)
	if !errors.Is(err, ErrMisconfigured) || !strings.Contains(err.Error(), "to https://www.heapanalytics.com (not followed)") {
		t.Errorf("got %v, want ErrMisconfigured naming the redirect's host", err)
	}
	if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "user_deletion?") {
		t.Errorf("error %q shows more than the redirect's host", err)
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const ceiling = 5 * time.Minute
	longest := time.Duration(math.MaxInt64)
	tests := []struct {
		value string
		want  time.Duration
		asked time.Duration // non-zero: clamped from this
	}{
		{"", 0, 0},
		{"0", 0, 0},
		{"12", 12 * time.Second, 0},
		{" 3 ", 3 * time.Second, 0},
		{"-5", 0, 0},
		{"1.5", 0, 0},
		{"soon", 0, 0},
		{"300", ceiling, 0},
		{"301", ceiling, 301 * time.Second},
		{"86400", ceiling, 24 * time.Hour},
		{"4294967295", ceiling, 4294967295 * time.Second},
		{"9223372036", ceiling, 9223372036 * time.Second},
		{"9223372037", ceiling, longest},              // more seconds than a Duration holds
		{"99999999999999999999999", ceiling, longest}, // more than a uint64 holds
		{now.Add(time.Hour).Format(http.TimeFormat), ceiling, time.Hour},
		{now.Add(4 * time.Minute).Format(http.TimeFormat), 4 * time.Minute, 0},
		{now.AddDate(7000, 0, 0).Format(http.TimeFormat), ceiling, longest},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, 0},
		{now.Add(30 * time.Second).Format(time.RFC850), 30 * time.Second, 0},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.value != "" {
			h.Set("Retry-After", tt.value)
		}
		if got, asked := retryAfter(h, now, ceiling); got != tt.want || asked != tt.asked {
			t.Errorf("Retry-After %q: %s (asked %s), want %s (asked %s)", tt.value, got, asked, tt.want, tt.asked)
		}
	}
}

func TestHeapMessage(t *testing.T) {
	tests := []struct {
		name string
		code int
		body string
		want string
	}{
		{"err.message", 400, `{"err":{"message":"a"},"message":"b","error":"c"}`, "a"},
		{"message", 400, `{"message":"b","error":"c"}`, "b"},
		{"error", 400, `{"error":"c"}`, "c"},
		{"err as a string", 400, `{"err":"d"}`, "d"},
		{"error as an object", 400, `{"error":{"x":1}}`, "Bad Request"},
		{"empty", 422, ``, "Unprocessable Entity"},
		{"not JSON", 400, `<html>`, "Bad Request"},
		{"control characters", 400, `{"message":"a\nb\u0000c"}`, "a b c"},
		{"long", 400, `{"message":"` + strings.Repeat("x", 500) + `"}`, strings.Repeat("x", 200) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := heapMessage(answer{code: tt.code, body: []byte(tt.body)}, redactor{}); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSanitize(t *testing.T) {
	red := redactor{
		users: []User{{Identity: "Alice@Example.com"}, {UserID: 123}, {UserID: 18446744073709551615}, {Identity: "ñoño"},
			{Identity: "Bob Smith"}, {Identity: "bad\xffname"}, {Identity: "agent007"},
			{Identity: "a+tag@example.org"}, {Identity: "0 0\r"}, {Identity: `%00"0`},
			{Identity: "\U0001F600fan"}},
		secrets: []string{"KEY-abc", "tok123", ""},
	}
	tests := []struct{ in, want string }{
		{"nothing here", "nothing here"},
		{"user alice@example.COM failed", "user [redacted] failed"},
		{"ids 123, 1234 and 18446744073709551615", "ids [redacted], 1234 and [redacted]"},
		{"id=123abc", "id=[redacted]abc"},
		{"key KEY-abc token tok123", "key [redacted] token [redacted]"},
		{"ñoño and ÑOÑO", "[redacted] and [redacted]"}, // Unicode case folding
		{"Alice@Example.comAlice@Example.com", "[redacted]"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{strings.Repeat("a", 195) + " 123 and more", strings.Repeat("a", 195) + " …"},
		// Echoed percent-encoded, in either hex case, or JSON-escaped.
		{"GET /users?identity=alice%40example.com&x=1", "GET /users?identity=[redacted]&x=1"},
		{"ALICE%40EXAMPLE%2ecom", "[redacted]"},
		{`{"identity":"alice\u0040example.com"}`, `{"identity":"[redacted]"}`},
		{`\u0061lice@example.com`, "[redacted]"},
		{`\u00f1o\u00F1o and %C3%B1o%C3%B1o`, "[redacted] and [redacted]"},
		{"bob+smith, Bob%20Smith, Bob%2bSmith", "[redacted], [redacted], Bob%2bSmith"},
		{"a+tag%40example.org, a%2Btag%40example.org", "[redacted], [redacted]"},
		{"0+0%0D and 0 0\r", "[redacted] and [redacted]"}, // found by FuzzRedact
		{`%00\"0`, "[redacted]"}, // found by FuzzRedact: one encoding undone at a time
		{`\ud83d\uDE00fan`, "[redacted]"},
		{`\ud800 \u12 %4 \ \x %`, `\ud800 \u12 %4 \ \x %`},
		{`key KEY%2Dabc token \u0074ok123`, "key [redacted] token [redacted]"},
		{`users%3A%20123 and \u0031\u0032\u0033`, "users%3A%20[redacted] and [redacted]"},
		{"50% of 123 at 100%", "50% of [redacted] at 100%"},
		// As Heap received it: invalid UTF-8 as U+FFFD.
		{"bad\uFFFDname", "[redacted]"},
		// A user id beside an identity is still a whole number.
		{"agent007123 and 007123", "[redacted] and 007123"},
	}
	for _, tt := range tests {
		if got := red.sanitize(tt.in); got != tt.want {
			t.Errorf("sanitize(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := red.sanitize(tt.in); len(got) > maxMessage+len("…") {
			t.Errorf("sanitize(%q) is %d bytes", tt.in, len(got))
		}
	}
}

func TestSanitizeCaseAndSpace(t *testing.T) {
	red := redactor{users: []User{{Identity: "älice@x.de"}, {Identity: "kelvin@x.de"}, {Identity: "Jane Q Doe"},
		{Identity: " padded id "}, {Identity: "Straße 5"}}}
	tests := []struct{ in, want string }{
		// Unicode case variants, as sent, JSON-escaped or percent-encoded.
		{"user ÄLICE@X.DE and ÄlIcE@x.De", "user [redacted] and [redacted]"},
		{`{"identity":"\u00c4LICE@X.DE"}`, `{"identity":"[redacted]"}`},
		{"%C3%84LICE%40X.DE", "[redacted]"},
		{`\u212aELVIN@X.DE and \u212Aelvin@x.de`, "[redacted] and [redacted]"}, // the Kelvin sign, JSON-escaped
		{"\u212aELVIN@X.DE", "[redacted]"},                                     // the Kelvin sign
		{"STRASSE 5 and STRAẞE 5", "STRASSE 5 and [redacted]"},                 // simple folding: ß is not ss
		// An identity with spaces, echoed inside quotes of any kind.
		{`user "Jane Q Doe" not found`, `user "[redacted]" not found`},
		{`user 'jane q doe'`, `user '[redacted]'`},
		{"user “JANE Q DOE”", "user “[redacted]”"},
		{`{"message":"user \"Jane Q Doe\""}`, `{"message":"user \"[redacted]\""}`},
		{"\"Jane\u00a0Q\u2009Doe\"", "\"[redacted]\""}, // NBSP, thin space
		{"\"Jane\tQ Doe\"", "\"[redacted]\""},
		{`"Jane%C2%A0Q+Doe" and "Jane\u00a0Q Doe"`, `"[redacted]" and "[redacted]"`},
		{`"padded id" and " padded id "`, `"[redacted]" and "[redacted]"`},
	}
	for _, tt := range tests {
		if got := red.sanitize(tt.in); got != tt.want {
			t.Errorf("sanitize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSanitizeCredentials(t *testing.T) {
	const app, key, token = "sim-app", "KEY-~~~~", "tok-5d1e0b"
	red := redactor{secrets: secretsOf(app, key, token)}
	cred := []byte(app + ":" + key)
	std, raw := base64.StdEncoding.EncodeToString(cred), base64.RawStdEncoding.EncodeToString(cred)
	urlSafe := base64.URLEncoding.EncodeToString(cred)
	if std == raw || std == urlSafe {
		t.Fatalf("pick credentials whose encodings differ: %s %s %s", std, raw, urlSafe)
	}
	tests := []struct{ in, want string }{
		{"407 Proxy Authentication Required: got Authorization: Basic " + std, "407 Proxy Authentication Required: got Authorization: Basic [redacted]"},
		{"credentials " + raw + " refused", "credentials [redacted] refused"},
		{"credentials " + urlSafe, "credentials [redacted]"},
		{"Authorization: Bearer " + token, "Authorization: Bearer [redacted]"},
		{"basic=" + url.QueryEscape(std), "basic=[redacted]"},
		{"basic=" + strings.ReplaceAll(std, "+", " "), "basic=[redacted]"}, // a form-decoded echo
		{`{"headers":{"Authorization":"Basic ` + strings.ReplaceAll(std, "/", `\/`) + `"}}`, `{"headers":{"Authorization":"Basic [redacted]"}}`},
	}
	for _, tt := range tests {
		if got := red.sanitize(tt.in); got != tt.want {
			t.Errorf("sanitize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSanitizeCut(t *testing.T) {
	// The search stops at maxScan bytes, here in the middle of an identity; the
	// rest of an echo that the cut goes through must not show.
	red := redactor{users: []User{{Identity: "alice@example.com"}}}
	msg := strings.Repeat("alice@example.com", maxScan/len("alice@example.com")+1)
	if got := red.sanitize(msg); got != redacted {
		t.Errorf("sanitize(%d bytes of repeated identity) = %q, want %q", len(msg), got, redacted)
	}
}

func TestBackoff(t *testing.T) {
	c := &Client{cfg: Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}}
	for n := range 70 {
		ceil := min(c.cfg.MaxBackoff, c.cfg.MinBackoff<<min(n, 20))
		sawAboveMin := false
		for range 200 {
			d := c.backoff(n)
			if d < c.cfg.MinBackoff || d > ceil {
				t.Fatalf("backoff(%d) = %s, outside [%s, %s]", n, d, c.cfg.MinBackoff, ceil)
			}
			sawAboveMin = sawAboveMin || d > c.cfg.MinBackoff
		}
		if n > 0 && !sawAboveMin {
			t.Errorf("backoff(%d) never jittered", n)
		}
	}
	fixed := &Client{cfg: Config{MinBackoff: time.Second, MaxBackoff: time.Second}}
	if d := fixed.backoff(3); d != time.Second {
		t.Errorf("backoff with Min = Max: %s", d)
	}
}

func TestRetryableError(t *testing.T) {
	inner := errors.New("boom")
	var err error = &RetryableError{Endpoint: epDeletion, Code: 503, RetryAfter: 2 * time.Second, Err: inner}
	if !errors.Is(err, ErrRetryable) || !errors.Is(err, inner) || errors.Is(err, ErrRejected) {
		t.Errorf("errors.Is is wrong for %v", err)
	}
	if got, want := err.Error(), "heap user_deletion: transient failure: HTTP 503 (retry after 2s): boom"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
