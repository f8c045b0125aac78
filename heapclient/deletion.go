package heapclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

const (
	pathAuth     = "/api/public/v0/auth_token"
	pathDeletion = "/api/public/v0/user_deletion"
	pathStatus   = "/api/public/v0/deletion_status/"

	maxAnswer = 1 << 20 // bytes of an answer read; Heap's answers are tiny
)

// Status is the state of a Heap deletion request.
type Status string

const (
	// StatusPending means Heap has not finished the deletion yet.
	StatusPending Status = "pending"
	// StatusComplete means Heap has deleted the users. It is final.
	StatusComplete Status = "complete"
)

// request is one Heap call that the retry loop can repeat.
type request struct {
	endpoint string
	method   string
	url      string
	body     []byte
	users    []User             // redacted from Heap's messages
	decode   func([]byte) error // parses a 2xx answer; its error means a malformed answer
	// acts: a 2xx means Heap acted on the request, so a 2xx answer that cannot
	// be read is ErrAcceptedUnreadable, never retried.
	acts bool
}

// Submit sends users to Heap in one deletion request and returns Heap's deletion
// request id. It refuses zero users or more than [MaxUsers] with [ErrBatchSize],
// and a user naming no one (empty Identity and UserID 0) with [ErrRejected],
// before sending anything. It retries 429, 5xx, network errors and timeouts
// within ctx and the retry budget, then returns a [*RetryableError]
// (errors.Is(err, ErrRetryable)). It never sends the users again after any 2xx:
// a 2xx without a readable deletion request id returns [ErrAcceptedUnreadable]
// at once (Heap may have accepted them). An error wrapping
// [ErrRejected] is permanent: Heap refused these users (400, 413 or 422; its
// message, with every identity and user id redacted, is in the error).
// [ErrUnauthorized] means the credentials are rejected, [ErrMisconfigured] that
// the answer came from something other than Heap's deletion logic (a redirect,
// a proxy, a wrong base URL): neither says anything about the users. When ctx
// ends, the error wraps ctx's error.
func (c *Client) Submit(ctx context.Context, users []User) (string, error) {
	if len(users) == 0 || len(users) > MaxUsers {
		return "", errorf(epDeletion, "%d users: %w", len(users), ErrBatchSize)
	}
	body := make([]byte, 0, 16+len(users)*32)
	body = append(body, `{"users":[`...)
	for i, u := range users {
		if u.Identity == "" && u.UserID == 0 {
			return "", errorf(epDeletion, "user %d of the batch has neither identity nor user id: %w", i, ErrRejected)
		}
		if i > 0 {
			body = append(body, ',')
		}
		body = appendUser(body, u)
	}
	body = append(body, "]}"...)

	var out struct {
		ID string `json:"deletion_request_id"`
	}
	err := c.call(ctx, request{
		endpoint: epDeletion,
		method:   http.MethodPost,
		url:      c.base + pathDeletion,
		body:     body,
		users:    users,
		acts:     true,
		decode: func(b []byte) error {
			out.ID = ""
			if err := json.Unmarshal(b, &out); err != nil {
				return errors.New("not JSON")
			}
			if out.ID == "" {
				return errors.New("no deletion_request_id")
			}
			return nil
		},
	})
	if err != nil {
		return "", err
	}
	c.m.batch.Observe(float64(len(users)))
	return out.ID, nil
}

// Status returns the status of Heap deletion request id: [StatusPending] or
// [StatusComplete]. [ErrNotFound] means Heap knows no such request for this app
// (or id is empty). It retries like [Client.Submit] and returns a
// [*RetryableError] when the retries run out; [ErrUnauthorized] means the
// credentials are rejected. Any other error (a status word other than pending or
// complete, which the error names) means Heap answered something this client
// does not understand: ask again later. When ctx ends, the error wraps ctx's
// error.
func (c *Client) Status(ctx context.Context, deletionRequestID string) (Status, error) {
	if deletionRequestID == "" {
		return "", errorf(epStatus, "empty deletion request id: %w", ErrNotFound)
	}
	var out struct {
		Status *string `json:"status"`
	}
	err := c.call(ctx, request{
		endpoint: epStatus,
		method:   http.MethodGet,
		url:      c.base + pathStatus + url.PathEscape(deletionRequestID),
		decode: func(b []byte) error {
			out.Status = nil
			if err := json.Unmarshal(b, &out); err != nil {
				return errors.New("malformed deletion_status answer")
			}
			if out.Status == nil {
				return errors.New("deletion_status answer holds no status")
			}
			return nil
		},
	})
	if err != nil {
		return "", err
	}
	switch s := Status(*out.Status); s {
	case StatusPending, StatusComplete:
		return s, nil
	default:
		word := *out.Status
		if len(word) > 40 {
			word = word[:40]
		}
		return "", errorf(epStatus, "unknown status %q", word)
	}
}

// CheckCredentials fetches a fresh token, deleting nothing, to prove that the app
// id and API key work. [ErrUnauthorized] means Heap rejected them; a
// [*RetryableError] means Heap could not be asked; an error wrapping
// [ErrMisconfigured] means something refused the request otherwise (a wrong
// base URL, a redirect, a proxy).
func (c *Client) CheckCredentials(ctx context.Context) error {
	return c.call(ctx, request{endpoint: epAuth})
}

// attempt runs req once, with a token, or, for auth_token itself, fetches a new
// token. gen is the generation of the token used; fresh says it was fetched for
// this attempt.
func (c *Client) attempt(ctx context.Context, req request) (gen uint64, fresh bool, err error) {
	if req.endpoint == epAuth {
		_, gen, _, err = c.token(ctx, true)
		return gen, true, err
	}
	tok, gen, fresh, err := c.token(ctx, false)
	if err != nil {
		return gen, true, err
	}
	return gen, fresh, c.exchange(ctx, req, tok)
}

// exchange sends one HTTP request after the rate limiter allows it, with
// Bearer token, or Basic auth when token is empty, and classifies the outcome.
func (c *Client) exchange(ctx context.Context, req request, token string) error {
	ep := req.endpoint
	if err := c.limiter.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return errorf(ep, "waiting for the rate limiter: %w", ctx.Err())
		}
		return errorf(ep, "the rate limiter's wait would outlast the deadline: %w", context.DeadlineExceeded)
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var body io.Reader = http.NoBody
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(actx, req.method, req.url, body)
	if err != nil {
		return errorf(ep, "building the request: %w", err)
	}
	key := c.apiKey()
	if token == "" {
		hr.SetBasicAuth(c.cfg.AppID, key)
	} else {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	if req.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")

	start := time.Now()
	resp, err := c.hc.Do(hr)
	a := answer{}
	if err == nil {
		a.code, a.header = resp.StatusCode, resp.Header
		a.body, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		resp.Body.Close()
	}
	c.m.duration.WithLabelValues(ep).Observe(time.Since(start).Seconds())
	red := redactor{users: req.users, secrets: secretsOf(c.cfg.AppID, key, token)}
	if err != nil && req.acts && a.code >= 200 && a.code < 300 {
		// Heap said yes before the body broke off: sending again could delete
		// the users twice over, in two deletion requests.
		c.m.requests.WithLabelValues(ep, strconv.Itoa(a.code)).Inc()
		return c.acceptedUnreadable(ep, a, "the body broke off ("+red.sanitize(err.Error())+")", red)
	}
	if err != nil {
		c.m.requests.WithLabelValues(ep, "error").Inc()
		var ne net.Error
		switch {
		case ctx.Err() != nil:
			return errorf(ep, "%w", ctx.Err())
		case actx.Err() != nil || errors.As(err, &ne) && ne.Timeout():
			return &RetryableError{Endpoint: ep, Err: fmt.Errorf("timed out (per-attempt limit %s)", c.cfg.RequestTimeout), reason: reasonTimeout}
		default:
			// The transport's error names the URL, never a header; redact anyway.
			return &RetryableError{Endpoint: ep, Err: errors.New(red.sanitize(err.Error())), reason: reasonNetwork}
		}
	}
	c.m.requests.WithLabelValues(ep, strconv.Itoa(a.code)).Inc()
	if err := classify(ep, a, c.now(), c.cfg.MaxRetryAfter, red); err != nil {
		var re *RetryableError
		if errors.As(err, &re) && re.asked > 0 {
			c.m.retryAfterClamped.WithLabelValues(ep).Inc()
			if c.clampLogged.CompareAndSwap(false, true) {
				c.log.Warn().Str("endpoint", ep).Int("code", a.code).Dur("retry_after", re.asked).
					Dur("max_retry_after", c.cfg.MaxRetryAfter).
					Msg("heap asked to wait longer than MaxRetryAfter; waiting MaxRetryAfter instead (logged once, counted in heapdel_heap_retry_after_clamped_total)")
			}
		}
		return err
	}
	if req.decode != nil {
		if err := req.decode(a.body); err != nil {
			if req.acts {
				return c.acceptedUnreadable(ep, a, err.Error(), red)
			}
			return &RetryableError{Endpoint: ep, Code: a.code, Err: err, reason: reasonServerError}
		}
	}
	return nil
}

// acceptedUnreadable is the error of a 2xx answer, to a request that Heap acts
// on, that holds no usable result: it says what Heap sent, redacted and cut.
func (c *Client) acceptedUnreadable(ep string, a answer, why string, red redactor) error {
	body := "an empty body"
	if len(a.body) > 0 {
		body = red.sanitize(string(a.body))
	}
	c.log.Error().Str("endpoint", ep).Int("code", a.code).Str("problem", why).
		Msg("heap answered 2xx without a deletion request id: the users may be accepted, so they are not sent again")
	return errorf(ep, "HTTP %d (%s): %w; Heap sent: %s", a.code, why, ErrAcceptedUnreadable, body)
}
