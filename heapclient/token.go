package heapclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"
)

// tokenCache holds the access token that all callers share, and the one fetch
// in flight when it is missing or old.
type tokenCache struct {
	mu      sync.Mutex
	value   string
	fetched time.Time
	gen     uint64 // counts fetched tokens, so that a 401 invalidates only the token it was for
	flight  *flight
}

// flight is one token fetch; done is closed when its result is set.
type flight struct {
	done     chan struct{}
	value    string
	gen      uint64
	err      error
	canceled bool // the fetcher's ctx ended the fetch: Heap said nothing
}

// invalidate forgets the token of generation gen, if it is still the current one.
func (t *tokenCache) invalidate(gen uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gen == gen {
		t.value = ""
	}
}

// token returns a token younger than TokenLifetime and its generation. When
// there is none, or force is set, exactly one caller fetches one while the
// others wait for it (or for their own ctx). fresh reports that the token was
// fetched for this call, so that a 401 with it means the credentials are bad.
func (c *Client) token(ctx context.Context, force bool) (value string, gen uint64, fresh bool, err error) {
	t := &c.tok
	for {
		t.mu.Lock()
		if !force && t.value != "" && c.now().Sub(t.fetched) < c.cfg.TokenLifetime {
			value, gen = t.value, t.gen
			t.mu.Unlock()
			return value, gen, false, nil
		}
		f := t.flight
		if f == nil {
			f = &flight{done: make(chan struct{})}
			t.flight = f
			t.mu.Unlock()
			c.fetch(ctx, f)
			return f.value, f.gen, true, f.err
		}
		t.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", 0, true, errorf(epAuth, "waiting for a token: %w", ctx.Err())
		}
		if f.canceled && ctx.Err() == nil {
			continue // the fetcher gave up, not Heap: fetch again
		}
		return f.value, f.gen, true, f.err
	}
}

// fetch runs flight f: one auth_token request, its result stored for all.
func (c *Client) fetch(ctx context.Context, f *flight) {
	var out struct {
		Token string `json:"access_token"`
	}
	start := c.now()
	req := request{
		endpoint: epAuth,
		method:   http.MethodPost,
		url:      c.base + pathAuth,
		decode: func(b []byte) error {
			if err := json.Unmarshal(b, &out); err != nil {
				return errors.New("malformed auth_token answer")
			}
			if out.Token == "" {
				return errors.New("auth_token answer holds no access_token")
			}
			return nil
		},
	}
	err := c.exchange(ctx, req, "")
	if errors.Is(err, ErrUnauthorized) && ctx.Err() == nil && c.rereadKey() {
		err = c.exchange(ctx, req, "") // once: the key file holds a new key
	}
	var re *RetryableError
	switch {
	case err == nil:
		c.m.tokens.WithLabelValues(fetchOK).Inc()
		c.log.Debug().Msg("fetched a heap access token")
	case errors.As(err, &re) || ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		c.m.tokens.WithLabelValues(fetchError).Inc()
	default:
		c.m.tokens.WithLabelValues(fetchRejected).Inc()
	}
	t := &c.tok
	t.mu.Lock()
	if err == nil {
		t.gen++
		t.value, t.fetched, f.value, f.gen = out.Token, start, out.Token, t.gen
	}
	// Per-attempt timeouts are not context errors, so a context error here is the
	// fetcher's own ctx, and says nothing about Heap.
	f.err = err
	f.canceled = ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
	t.flight = nil
	t.mu.Unlock()
	close(f.done)
}
