package heapclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrUnauthorized means Heap rejected the credentials: a 401 on auth_token, or
	// a 401 with a token fetched moments before. Retrying will not help until the
	// app id or API key is fixed.
	ErrUnauthorized = errors.New("heap rejected the credentials")
	// ErrNotFound means deletion_status answered 404: Heap knows no such deletion
	// request for this app.
	ErrNotFound = errors.New("deletion request not found")
	// ErrRejected means Heap refused the request permanently (a 4xx other than
	// 401, 404 on deletion_status, 408 and 429). The error text carries Heap's
	// message, with every submitted identity and user id redacted.
	ErrRejected = errors.New("rejected by Heap")
	// ErrMisconfigured means the request did not reach Heap's deletion logic: a 403,
	// 405, or a 404 on auth_token or user_deletion, as a wrong HEAPDEL_HEAP_BASE_URL,
	// a proxy or a firewall gives. It says nothing about the users: fix the setting
	// and try again. The error text carries the status code.
	ErrMisconfigured = errors.New("heap endpoint refused the request (check HEAPDEL_HEAP_BASE_URL and any proxy in between)")
	// ErrRetryable means a transient failure (429, 5xx, a network error, a
	// timeout, a malformed answer) outlived the retry budget: try again later.
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

	reason string // retries metric label
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
// error wrapping ErrUnauthorized, ErrNotFound or ErrRejected. Network errors and
// timeouts are classified where they happen, in send, as retryable too.
func classify(endpoint string, a answer, now time.Time, red redactor) error {
	switch c := a.code; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusTooManyRequests:
		return &RetryableError{Endpoint: endpoint, Code: c, RetryAfter: retryAfter(a.header, now),
			Err: errors.New(heapMessage(a, red)), reason: reasonRateLimited}
	case c == http.StatusRequestTimeout:
		return &RetryableError{Endpoint: endpoint, Code: c, Err: errors.New(heapMessage(a, red)), reason: reasonTimeout}
	case c >= 500:
		return &RetryableError{Endpoint: endpoint, Code: c, RetryAfter: retryAfter(a.header, now),
			Err: errors.New(heapMessage(a, red)), reason: reasonServerError}
	case c == http.StatusUnauthorized:
		return errorf(endpoint, "HTTP 401: %w", ErrUnauthorized)
	case c == http.StatusNotFound && endpoint == epStatus:
		return errorf(endpoint, "HTTP 404: %w", ErrNotFound)
	case c == http.StatusForbidden || c == http.StatusMethodNotAllowed || c == http.StatusNotFound:
		return errorf(endpoint, "HTTP %d: %w", c, ErrMisconfigured)
	default:
		return errorf(endpoint, "HTTP %d: %w: %s", c, ErrRejected, heapMessage(a, red))
	}
}

// retryAfter reads a Retry-After header, in seconds or as an HTTP date; 0 when
// absent, unreadable or past.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
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

// redactor removes identities, user ids and secrets from text that Heap sent,
// which might echo them, and caps its length.
type redactor struct {
	users   []User
	secrets []string
}

const (
	maxMessage = 200 // bytes of Heap's message kept in an error
	redacted   = "[redacted]"
)

func (r redactor) sanitize(msg string) string {
	if len(msg) > 64<<10 {
		msg = msg[:64<<10]
	}
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	hide := make([]bool, len(msg))
	hidden := false
	mark := func(i, n int) {
		for j := i; j < i+n; j++ {
			hide[j] = true
		}
		hidden = true
	}
	markAll := func(hay, needle string) {
		if needle == "" || len(needle) > len(hay) {
			return
		}
		for off := 0; ; {
			i := strings.Index(hay[off:], needle)
			if i < 0 {
				return
			}
			mark(off+i, len(needle))
			off += i + 1
		}
	}
	for _, s := range r.secrets {
		markAll(msg, s)
	}
	lower := asciiLower(msg)
	var ids map[string]bool
	for _, u := range r.users {
		if u.Identity != "" {
			markAll(lower, asciiLower(u.Identity))
		} else {
			if ids == nil {
				ids = make(map[string]bool)
			}
			ids[strconv.FormatUint(u.UserID, 10)] = true
		}
	}
	if ids != nil { // user ids: whole runs of digits
		for i := 0; i < len(msg); {
			if msg[i] < '0' || msg[i] > '9' {
				i++
				continue
			}
			j := i
			for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' {
				j++
			}
			if ids[msg[i:j]] {
				mark(i, j-i)
			}
			i = j
		}
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
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		if b.Len()+len(string(r)) > maxMessage {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
