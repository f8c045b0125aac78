package heapclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

var (
	// ErrUnauthorized means Heap rejected the credentials: a 401 on auth_token, or
	// a 401 with a token fetched moments before. Retrying will not help until the
	// app id or API key is fixed.
	ErrUnauthorized = errors.New("heap rejected the credentials")
	// ErrNotFound means deletion_status answered 404, with a token that
	// auth_token had just issued or that Heap still accepts: Heap knows no such
	// deletion request for this app. A 404 from any other endpoint, or a token
	// fetch that failed, is never ErrNotFound.
	ErrNotFound = errors.New("deletion request not found")
	// ErrRejected means Heap refused the submitted users themselves: user_deletion
	// answered 400, 413 or 422 (heap-api.md names these, undocumented, as Heap's
	// answers to a bad body, too many users, an empty list or a malformed user),
	// or Submit was given a user naming no one. Resending the same users will
	// fail again. It is the only error that says something about the users; the
	// error text carries Heap's message, with every submitted identity and user
	// id, the key and the token redacted.
	ErrRejected = errors.New("rejected by Heap")
	// ErrMisconfigured means the answer says nothing about the users: a redirect
	// (3xx, never followed), 402, 403, 405, 407, 409, 410, 411, 415 or any other
	// 4xx that is neither 401, 408, 429, a 404 on deletion_status nor a 400, 413
	// or 422 on user_deletion, and any non-2xx from auth_token other than 401,
	// 408, 429 and 5xx. A wrong HEAPDEL_HEAP_BASE_URL, a proxy or a firewall
	// gives these. Fix the setting and try again, later: a caller must never
	// fail users for it. The error text carries the status code (and, for a
	// redirect, where it pointed).
	ErrMisconfigured = errors.New("heap endpoint refused the request (check HEAPDEL_HEAP_BASE_URL and any proxy in between)")
	// ErrAcceptedUnreadable means user_deletion answered 2xx but the answer lacks
	// a deletion request id (not JSON, no deletion_request_id, or a body cut
	// short): Heap may have accepted the users. Submit sent them once and never
	// again; the caller must not resubmit them on its own and must hold them for
	// an operator, who can check in Heap what was received. The error text
	// carries the status code and what Heap sent, with every submitted identity
	// and user id, the key and the token redacted, cut to 200 bytes.
	ErrAcceptedUnreadable = errors.New("heap answered 2xx without a deletion request id: it may have accepted the users, do not resubmit them")
	// ErrRetryable means a transient failure (429, 5xx, a network error, a
	// timeout, a malformed answer from auth_token or deletion_status) outlived the retry budget: try again later.
	// Such errors are a [*RetryableError].
	ErrRetryable = errors.New("transient failure")
	// ErrBatchSize means Submit was given zero users or more than [MaxUsers];
	// nothing was sent.
	ErrBatchSize = errors.New("batch must hold 1 to 10000 users")
)

// RetryableError is returned (wrapped) for transient failures that outlived the
// retry budget; errors.Is(err, ErrRetryable) reports true for it.
type RetryableError struct {
	Endpoint   string        // "auth_token", "user_deletion", "deletion_status"
	Code       int           // HTTP status, 0 for a network error or timeout
	RetryAfter time.Duration // Heap's Retry-After if it sent one, else 0
	Err        error

	reason string        // retries metric label
	asked  time.Duration // what Retry-After asked for, when more than MaxRetryAfter (RetryAfter holds the cap)
}

// Error describes the failure; it holds no secret and no identity.
func (e *RetryableError) Error() string {
	var b strings.Builder
	b.WriteString("heap ")
	b.WriteString(e.Endpoint)
	b.WriteString(": transient failure")
	if e.Code != 0 {
		b.WriteString(": HTTP ")
		b.WriteString(strconv.Itoa(e.Code))
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying failure.
func (e *RetryableError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrRetryable].
func (e *RetryableError) Is(target error) bool { return target == ErrRetryable }

// answer is one HTTP response, read in full.
type answer struct {
	code   int
	header http.Header
	body   []byte
}

// classify is the one place that decides what an HTTP answer means: nil for
// success, a *RetryableError for what may pass (429, 408, 5xx), or a permanent
// error wrapping ErrUnauthorized (401), ErrNotFound (404 on deletion_status),
// ErrRejected (400, 413, 422 on user_deletion: an answer about the users) or
// ErrMisconfigured (everything else: an answer about heapdel's setup, never
// about the users). Network errors and timeouts are classified where they
// happen, in send, as retryable too.
//
// A Retry-After longer than maxWait is cut to maxWait; the error's asked field
// then holds what Heap asked for.
func classify(endpoint string, a answer, now time.Time, maxWait time.Duration, red redactor) error {
	switch c := a.code; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusTooManyRequests:
		wait, asked := retryAfter(a.header, now, maxWait)
		return &RetryableError{Endpoint: endpoint, Code: c, RetryAfter: wait, asked: asked,
			Err: errors.New(heapMessage(a, red)), reason: reasonRateLimited}
	case c == http.StatusRequestTimeout:
		return &RetryableError{Endpoint: endpoint, Code: c, Err: errors.New(heapMessage(a, red)), reason: reasonTimeout}
	case c >= 500:
		wait, asked := retryAfter(a.header, now, maxWait)
		return &RetryableError{Endpoint: endpoint, Code: c, RetryAfter: wait, asked: asked,
			Err: errors.New(heapMessage(a, red)), reason: reasonServerError}
	case c == http.StatusUnauthorized:
		return errorf(endpoint, "HTTP 401: %w", ErrUnauthorized)
	case c == http.StatusNotFound && endpoint == epStatus:
		return errorf(endpoint, "HTTP 404: %w", ErrNotFound)
	case endpoint == epDeletion && (c == http.StatusBadRequest || c == http.StatusRequestEntityTooLarge ||
		c == http.StatusUnprocessableEntity):
		return errorf(endpoint, "HTTP %d: %w: %s", c, ErrRejected, heapMessage(a, red))
	case c >= 300 && c < 400:
		return errorf(endpoint, "HTTP %d, a redirect%s (not followed): %w", c, redirectTarget(a.header, red), ErrMisconfigured)
	default:
		return errorf(endpoint, "HTTP %d: %w: %s", c, ErrMisconfigured, heapMessage(a, red))
	}
}

// redirectTarget names where a redirect pointed, scheme and host only (a path or
// query could hold anything), for the operator who must fix the base URL.
func redirectTarget(h http.Header, red redactor) string {
	u, err := url.Parse(h.Get("Location"))
	if err != nil || u.Host == "" {
		return ""
	}
	return " to " + red.sanitize(u.Scheme+"://"+u.Host)
}

// retryAfter reads a Retry-After header, in seconds or as an HTTP date: 0 when
// absent, unreadable or past. A wait longer than ceiling comes back as ceiling,
// with asked set to what the header asked for (a number of seconds too large
// for a time.Duration asks for the longest one); asked is 0 otherwise.
func retryAfter(h http.Header, now time.Time, ceiling time.Duration) (wait, asked time.Duration) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, 0
	}
	wait = -1
	if n, err := strconv.ParseUint(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		wait = time.Duration(math.MaxInt64)
		if err == nil && n <= uint64(math.MaxInt64/int64(time.Second)) {
			wait = time.Duration(n) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil && t.After(now) {
		wait = t.Sub(now) // saturates at the longest Duration
	}
	switch {
	case wait <= 0:
		return 0, 0
	case wait > ceiling:
		return ceiling, wait
	}
	return wait, 0
}

// heapMessage extracts Heap's error message leniently (err.message, then
// message, then error, then err as a plain string, else the HTTP status text)
// and sanitises it.
func heapMessage(a answer, red redactor) string {
	var body struct {
		Err     json.RawMessage `json:"err"`
		Message json.RawMessage `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	msg := ""
	if json.Unmarshal(a.body, &body) == nil {
		var inner struct {
			Message string `json:"message"`
		}
		if len(body.Err) > 0 && json.Unmarshal(body.Err, &inner) == nil {
			msg = inner.Message
		}
		for _, raw := range []json.RawMessage{body.Message, body.Error, body.Err} {
			if msg != "" {
				break
			}
			if len(raw) > 0 {
				_ = json.Unmarshal(raw, &msg) // not a string: leaves msg empty
			}
		}
	}
	if msg == "" {
		msg = http.StatusText(a.code)
	}
	return red.sanitize(msg)
}

// backoff returns the wait before retry number n (0-based): full jitter between
// MinBackoff and an exponentially growing ceiling capped at MaxBackoff.
func (c *Client) backoff(n int) time.Duration {
	lo, hi := c.cfg.MinBackoff, c.cfg.MaxBackoff
	ceil := hi
	if n < 62 {
		if d := lo << n; d > 0 && d < hi {
			ceil = d
		}
	}
	if ceil <= lo {
		return lo
	}
	return lo + rand.N(ceil-lo+1)
}

// call runs req with retries: it is the one retry loop of the package.
func (c *Client) call(ctx context.Context, req request) error {
	start := c.now()
	maxRetries := max(c.cfg.MaxRetries, 0)
	refreshed := false
	var last error
	for retries := 0; ; {
		gen, fresh, err := c.attempt(ctx, req)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return stopped(req.endpoint, ctx, err, last)
		}
		if errors.Is(err, ErrUnauthorized) && !fresh && !refreshed {
			// The cached token may have expired early: refresh once, at once.
			refreshed = true
			c.tok.invalidate(gen)
			c.m.retries.WithLabelValues(req.endpoint, reasonTokenExpired).Inc()
			c.log.Debug().Str("endpoint", req.endpoint).Msg("heap answered 401, refreshing the token")
			continue
		}
		var re *RetryableError
		if !errors.As(err, &re) {
			if errors.Is(err, ErrUnauthorized) {
				c.log.Error().Str("endpoint", req.endpoint).Msg("heap rejected the app id or API key")
			}
			return err
		}
		last = err
		if retries >= maxRetries {
			return err
		}
		wait := re.RetryAfter
		if wait <= 0 {
			wait = c.backoff(retries)
		}
		if c.now().Sub(start)+wait > c.cfg.RetryBudget {
			return err // RetryAfter tells the caller when to come back
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return err // waiting would only end in ctx's error
		}
		retries++
		c.m.retries.WithLabelValues(re.Endpoint, re.reason).Inc() // the endpoint that failed: a token fetch may fail inside Submit
		c.log.Warn().Str("endpoint", re.Endpoint).Int("code", re.Code).Str("reason", re.reason).
			Int("retry", retries).Dur("wait", wait).Err(err).Msg("heap request failed, retrying")
		if err := sleep(ctx, wait); err != nil {
			return stopped(req.endpoint, ctx, err, last)
		}
	}
}

// stopped is the error of a call that ctx ended, or whose rate-limiter wait
// would outlast ctx's deadline (err, already prefixed): it wraps ctx's error and
// the last transient failure, if any.
func stopped(endpoint string, ctx context.Context, err, last error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = errorf(endpoint, "%w", ctxErr)
	}
	if last != nil {
		return fmt.Errorf("%w (after: %w)", err, last)
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// secretsOf returns the secrets a request's redactor hides besides identities
// and user ids: the API key, the token, and the key as HTTP Basic auth sends it,
// base64 of "app:key" (padded or not, standard or URL alphabet), which a
// proxy's error page may echo with or without its Authorization header.
func secretsOf(app, key, token string) []string {
	out := []string{key, token}
	cred := []byte(app + ":" + key)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if e := enc.EncodeToString(cred); !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}

// redactor removes identities, user ids and secrets from text that Heap sent,
// which might echo them, and caps its length.
type redactor struct {
	users   []User
	secrets []string
}

const (
	maxMessage = 200      // bytes of Heap's message kept in an error
	maxScan    = 64 << 10 // bytes of Heap's message searched; the rest is dropped
	redacted   = "[redacted]"
)

// sanitize returns msg fit for an error or a log line: valid UTF-8 with control
// characters blanked, cut to maxMessage bytes (then ending in "…"), and with every
// secret, identity and user id (a whole number) replaced by "[redacted]", whether
// Heap echoed it as sent, percent-encoded (a space also as '+') or JSON-escaped.
// Identities are found in any case (Unicode simple case folding, as
// strings.EqualFold: "ÄLICE" for "älice"), with any Unicode white space (NBSP,
// a tab) for each white-space character, and also without the white space
// around them, as a page or a normalising server may echo them. Two encodings
// nested, HTML entities, collapsed white space and other transforms are not
// undone.
func (r redactor) sanitize(msg string) string {
	cut := len(msg) > maxScan
	if cut {
		msg = msg[:maxScan]
	}
	msg = printable(msg)

	// What to look for, as Heap received it: printable, identities folded.
	var exact, folded []string
	var ids map[string]bool
	longest := 0
	variants := func(s string) []string {
		s = printable(s)
		longest = max(longest, len(s))
		if strings.Contains(s, "+") { // a space in a URL's query: see percentEscape
			return []string{s, strings.ReplaceAll(s, "+", " ")}
		}
		return []string{s}
	}
	for _, s := range r.secrets {
		if s != "" {
			exact = append(exact, variants(s)...)
		}
	}
	for _, u := range r.users {
		if u.Identity != "" {
			for _, s := range variants(u.Identity) {
				// As sent, and without the white space around it, which a page
				// or a normalising server may drop.
				f := foldView(view{text: s}).text
				folded = append(folded, f)
				if t := strings.Trim(f, " "); t != "" && t != f {
					folded = append(folded, t)
				}
			}
			continue
		}
		if ids == nil {
			ids = make(map[string]bool)
		}
		id := strconv.FormatUint(u.UserID, 10)
		ids[id] = true
		longest = max(longest, len(id))
	}

	// Heap may echo a value URL- or JSON-encoded: search msg with either undone too.
	views := []view{{text: msg}}
	if strings.ContainsAny(msg, "%+") {
		views = append(views, unescape(msg, percentEscape))
	}
	if strings.Contains(msg, `\`) {
		views = append(views, unescape(msg, jsonEscape))
	}
	hide := make([]bool, len(msg))
	hidden := false
	mark := func(v view, i, j int) {
		i, j = v.source(i, j)
		for k := i; k < j; k++ {
			hide[k] = true
		}
		hidden = true
	}
	markAll := func(v view, hay, needle string) {
		for off := 0; len(needle) <= len(hay)-off; {
			i := strings.Index(hay[off:], needle)
			if i < 0 {
				return
			}
			mark(v, off+i, off+i+len(needle))
			off += i + 1
		}
	}
	for _, v := range views {
		for _, s := range exact {
			markAll(v, v.text, s)
		}
		if folded != nil {
			fv := foldView(v)
			for _, s := range folded {
				markAll(fv, fv.text, s)
			}
		}
	}
	if ids != nil { // user ids: whole runs of digits, bounded also by what is hidden
		for _, v := range views {
			digit := func(k int) bool {
				src, _ := v.source(k, k+1)
				return v.text[k] >= '0' && v.text[k] <= '9' && !hide[src]
			}
			for i := 0; i < len(v.text); {
				if !digit(i) {
					i++
					continue
				}
				j := i
				for j < len(v.text) && digit(j) {
					j++
				}
				if ids[v.text[i:j]] {
					mark(v, i, j)
				}
				i = j
			}
		}
	}
	if cut && longest > 0 {
		// An echo that the cut goes through is not found: hide where it may start.
		// An echo takes at most 9 bytes per byte: a case or white-space variant
		// is at most 3 bytes for 1 (the Kelvin sign for 'k', U+3000 for ' '),
		// percent-encoded 3 for 1.
		k := max(len(msg)-9*longest, 0)
		for k > 0 && !utf8.RuneStart(msg[k]) {
			k--
		}
		mark(views[0], k, len(msg))
	}

	var b strings.Builder
	for i, r := range msg {
		if hidden && hide[i] {
			if i == 0 || !hide[i-1] {
				if b.Len()+len(redacted) > maxMessage {
					b.WriteString("…")
					break
				}
				b.WriteString(redacted)
			}
			continue
		}
		if b.Len()+utf8.RuneLen(r) > maxMessage {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// printable blanks control characters and turns each byte of invalid UTF-8 into
// U+FFFD, as a JSON encoder does: an identity with such bytes reached Heap so.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// A view is Heap's message as searched for secrets: as it is (at is nil), or with
// one encoding undone. Byte k of text comes from the message's bytes from at[k]
// on; at[len(text)] is the message's length.
type view struct {
	text string
	at   []int
}

// source returns the range of the message that v.text[i:j] comes from.
func (v view) source(i, j int) (int, int) {
	if v.at == nil {
		return i, j
	}
	for j < len(v.text) && v.at[j] == v.at[j-1] { // j inside a decoded character
		j++
	}
	return v.at[i], v.at[j]
}

// unescape decodes msg's escapes, left to right, with escape, which appends to b
// what the escape that s starts with stands for and returns its length, 0 if s
// starts with none. Control characters come out blanked.
func unescape(msg string, escape func(b []byte, s string) ([]byte, int)) view {
	b := make([]byte, 0, len(msg))
	at := make([]int, 0, len(msg)+1)
	for i := 0; i < len(msg); {
		n := len(b)
		var size int
		if b, size = escape(b, msg[i:]); size == 0 {
			b, size = append(b, msg[i]), 1
		}
		for k := n; k < len(b); k++ {
			if b[k] < 0x20 || b[k] == 0x7f {
				b[k] = ' '
			}
			at = append(at, i)
		}
		i += size
	}
	return view{text: string(b), at: append(at, len(msg))}
}

// percentEscape decodes %XX, and '+' as a space, as in a URL's query.
func percentEscape(b []byte, s string) ([]byte, int) {
	switch {
	case s[0] == '+':
		return append(b, ' '), 1
	case len(s) >= 3 && s[0] == '%' && isHex(s[1]) && isHex(s[2]):
		return append(b, unhex(s[1])<<4|unhex(s[2])), 3
	}
	return b, 0
}

// jsonEscape decodes a JSON string's escapes: \uXXXX, surrogate pairs included (a
// lone surrogate gives U+FFFD, as in encoding/json), and \" \\ \/ \b \f \n \r \t.
func jsonEscape(b []byte, s string) ([]byte, int) {
	if len(s) < 2 || s[0] != '\\' {
		return b, 0
	}
	if i := strings.IndexByte(`"\/bfnrt`, s[1]); i >= 0 {
		return append(b, "\"\\/\b\f\n\r\t"[i]), 2
	}
	r, ok := hex4(s[1:])
	if !ok {
		return b, 0
	}
	if !utf16.IsSurrogate(r) {
		return utf8.AppendRune(b, r), 6
	}
	if len(s) >= 12 && s[6] == '\\' {
		if r2, ok := hex4(s[7:]); ok {
			if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
				return utf8.AppendRune(b, d), 12
			}
		}
	}
	return utf8.AppendRune(b, utf8.RuneError), 6
}

// hex4 reads the "uXXXX" that s starts with.
func hex4(s string) (rune, bool) {
	if len(s) < 5 || s[0] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[1:5]) {
		if !isHex(c) {
			return 0, false
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// unhex returns the value of hex digit c.
func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// foldView returns v with each character replaced by the smallest of its
// Unicode simple case-folding orbit (so "Ä" and "ä", "k" and the Kelvin sign
// compare equal) and each white-space character (NBSP, U+2028, ...) by a
// space, mapped back to the message as v is. Bytes that are not UTF-8 stay as
// they are.
func foldView(v view) view {
	b := make([]byte, 0, len(v.text))
	at := make([]int, 0, len(v.text)+1)
	for i := 0; i < len(v.text); {
		r, size := utf8.DecodeRuneInString(v.text[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, v.text[i])
		case unicode.IsSpace(r):
			b = append(b, ' ')
		default:
			b = utf8.AppendRune(b, foldRune(r))
		}
		src := i
		if v.at != nil {
			src = v.at[i]
		}
		for len(at) < len(b) {
			at = append(at, src)
		}
		i += size
	}
	end := len(v.text)
	if v.at != nil {
		end = v.at[len(v.text)]
	}
	return view{text: string(b), at: append(at, end)}
}

// foldRune returns the smallest rune that strings.EqualFold takes r for.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	return m
}
