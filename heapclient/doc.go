// Package heapclient is heapdel's client of Heap's User Deletion API, and the
// only code in heapdel that talks to Heap.
//
// A [Client] fetches and caches an access token (POST /api/public/v0/auth_token
// with HTTP Basic app id and API key), submits users for deletion
// ([Client.Submit]: POST user_deletion, up to [MaxUsers] users), and reads the
// status of a deletion request ([Client.Status]: GET deletion_status/{id}).
// [Client.CheckCredentials] proves the credentials without deleting anything.
//
// # Tokens
//
// All callers share one token. When it is missing or older than
// Config.TokenLifetime, exactly one caller fetches a new one while the others
// wait (each within its own ctx). A 401 on user_deletion or deletion_status with
// a cached token refreshes the token once and retries at once; a 401 with a token
// fetched for that very call, or a 401 on auth_token, returns [ErrUnauthorized]:
// the client never loops on bad credentials.
//
// With Config.APIKeyFile (a mounted Kubernetes Secret, say), a 401 on
// auth_token makes the client read the file again, at most once per 10 s, and
// fetch the token once more if the file now holds another key, so a rotated
// key is picked up without a restart. The key is never logged.
//
// # Errors
//
// Every exported function's errors fall in these classes, told apart with
// errors.Is and errors.As:
//
//   - [ErrBatchSize]: Submit got zero or more than [MaxUsers] users; nothing was sent.
//   - [ErrUnauthorized]: Heap rejected the app id or API key. Fix the credentials.
//   - [ErrNotFound]: deletion_status answered 404 for this id, with a token Heap
//     had accepted. A 404 from auth_token, or a failed token fetch, never is.
//   - [ErrRejected]: user_deletion answered 400, 413 or 422, the only answers
//     about the submitted users (heap-api.md's undocumented candidates for a bad
//     body, too many users, a malformed user); the error carries Heap's message,
//     sanitised. Resending the same users will fail again.
//   - [ErrMisconfigured]: any other answer that is neither success, retryable,
//     401 nor that 404: a redirect (never followed), 402, 403, 405, 407, 409,
//     410, 411, 415 or another 4xx, and any non-2xx from auth_token other than
//     401, 408, 429 and 5xx. The request did not reach Heap's deletion logic
//     (wrong base URL, a proxy, a firewall). It says nothing about the users:
//     wait, loudly, and fix the setting; never fail users for it.
//   - [ErrAcceptedUnreadable]: user_deletion answered 2xx without a readable
//     deletion request id. Heap may have accepted the users: Submit never sends
//     them again, and the caller must hold them for an operator instead of
//     resubmitting. The error carries the status code and the body, sanitised.
//   - [ErrRetryable], as a [*RetryableError]: 429, 408, 5xx, a connection error,
//     a per-attempt timeout or a malformed 2xx answer from auth_token or
//     deletion_status persisted through
//     Config.MaxRetries retries or Config.RetryBudget. Try again later, no sooner
//     than RetryableError.RetryAfter if set.
//   - ctx's error (context.Canceled or context.DeadlineExceeded), wrapped: ctx
//     ended first. If transient failures came before, the error also wraps the
//     last [*RetryableError]. A rate-limiter wait that would outlast ctx's
//     deadline returns at once, wrapping context.DeadlineExceeded.
//   - From [New] and [Config.Validate]: an error naming the invalid field.
//   - From [Client.Status] only: an error naming an unknown status word.
//
// The decision between "retry" and "permanent" is made in one place, classify.
// Retries wait with exponential backoff and full jitter between
// Config.MinBackoff and Config.MaxBackoff, or Heap's Retry-After (seconds or
// HTTP date) when Heap sends one, cut to Config.MaxRetryAfter (default 5m) so
// that a Retry-After of a day or a century cannot park a batch that long (each
// cut is counted, and the first one per Client logged); a wait that would
// overrun the retry budget, or past ctx's deadline, is not started: the call
// returns the [*RetryableError] at once (with RetryAfter set, capped, if Heap
// sent one), so that the caller can reschedule.
//
// # Secrets and identities
//
// No error string, log line or metric label holds the API key, a token, an
// identity or a user id. Heap's error messages (and a proxy's) may echo what was
// sent, as sent or URL- or JSON-encoded, so before a message is put in an error,
// every submitted identity and user id, the API key, the token and the Basic
// credentials (base64 of app id and key, with or without padding), in any of
// these forms, are replaced by "[redacted]", control characters are blanked,
// and the message is cut to 200 bytes. Identities are matched in any case
// (Unicode simple case folding, as strings.EqualFold), with any white space
// for white space (NBSP, a tab), and without their leading or trailing white
// space.
//
// # Rate limiting and transport
//
// One token bucket (Config.Rate, Config.Burst) sits in front of every HTTP
// request, retries and token fetches included, so that heapdel stays under
// Heap's undocumented limit. Each attempt has its own timeout
// (Config.RequestTimeout); connections are reused. Plain http:// base URLs are
// refused unless the host is loopback (the simulator in package heaptest).
// Redirects are never followed.
//
// # Metrics
//
// Registered on Config.Registerer (none when nil): heapdel_heap_requests_total
// {endpoint,code}, heapdel_heap_request_duration_seconds{endpoint},
// heapdel_heap_batch_users, heapdel_heap_retries_total{endpoint,reason} (reason:
// rate_limited, server_error, network, timeout, token_expired),
// heapdel_heap_token_fetches_total{result} (ok, rejected, error) and
// heapdel_heap_retry_after_clamped_total{endpoint} (Retry-After values cut to
// Config.MaxRetryAfter). Several clients
// may share a registry: they share the metrics.
package heapclient
