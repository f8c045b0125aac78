package heapclient

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// leakUsers are the users of the error-path tests: none of them, nor the API
// key, nor any token, may appear in an error, a log line or a metric label.
var leakUsers = []User{
	{Identity: "alice.secret@example.com"},
	{UserID: 8512376125342183},
	{UserID: math.MaxInt64},
	{Identity: "Bob-Identity-7731"},
}

func rejectSome(u heaptest.User) heaptest.Outcome {
	if u.Identity == "alice.secret@example.com" || u.UserID == "8512376125342183" {
		return heaptest.OutcomeReject
	}
	return heaptest.OutcomeComplete
}

func answer400(body string) func(http.ResponseWriter, *http.Request) bool {
	return answerOn(epDeletion, http.StatusBadRequest, body)
}

// answerOn makes endpoint always answer code with body.
func answerOn(endpoint string, code int, body string) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/"+endpoint) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprint(w, body)
		return true
	}
}

type callCase struct {
	name     string
	sim      heaptest.Options
	cfg      func(*Config)
	script   []heaptest.Fault
	override func(http.ResponseWriter, *http.Request) bool
	call     string // "submit", "status", "check"
	statusID string // for "status": "" = the id of a submission made before the script starts
	ctxLimit time.Duration

	wantErr     []error // errors.Is must hold for each
	wantNot     []error // errors.Is must not hold
	wantCode    int     // *RetryableError's Code, when wantErr holds ErrRetryable
	wantText    []string
	wantResult  string
	wantReqs    map[string]int
	retryAfter  time.Duration
	noRedaction bool
}

func TestCalls(t *testing.T) {
	all := []error{ErrUnauthorized, ErrNotFound, ErrRejected, ErrMisconfigured, ErrAcceptedUnreadable, ErrRetryable, ErrBatchSize, context.Canceled, context.DeadlineExceeded}
	fault := func(endpoint string, code int) []heaptest.Fault {
		return []heaptest.Fault{{Endpoint: endpoint, Status: code}}
	}
	tests := []callCase{
		{name: "submit ok", call: "submit", wantReqs: map[string]int{epAuth: 1, epDeletion: 1}},
		{name: "status pending", call: "status", sim: heaptest.Options{CompleteAfter: time.Hour}, wantResult: "pending",
			wantReqs: map[string]int{epAuth: 1, epDeletion: 1, epStatus: 1}},
		{name: "status complete", call: "status", wantResult: "complete"},
		{name: "status 404", call: "status", statusID: uuid.NewString(), wantErr: []error{ErrNotFound}, wantReqs: map[string]int{epStatus: 1}},
		{name: "status empty id", call: "status", statusID: "-", wantErr: []error{ErrNotFound}, wantReqs: map[string]int{epStatus: 0}},
		{name: "status id escaped", call: "status", statusID: "../user_deletion?x=1#y", wantErr: []error{ErrNotFound}, wantReqs: map[string]int{epStatus: 1}},
		{name: "check ok", call: "check", wantReqs: map[string]int{epAuth: 1}},
		{name: "check 401", call: "check", cfg: func(c *Config) { c.APIKey = "wrong-key-SECRET-1" },
			wantErr: []error{ErrUnauthorized}, wantReqs: map[string]int{epAuth: 1}},
		{name: "submit 401 on auth_token", call: "submit", cfg: func(c *Config) { c.APIKey = "wrong-key-SECRET-2" },
			wantErr: []error{ErrUnauthorized}, wantReqs: map[string]int{epAuth: 1, epDeletion: 0}},
		{name: "submit 401 with a fresh token", call: "submit", sim: heaptest.Options{TokenTTL: time.Nanosecond},
			wantErr: []error{ErrUnauthorized}, wantReqs: map[string]int{epAuth: 1, epDeletion: 1}},
		{name: "status 401 with a fresh token", call: "status", statusID: uuid.NewString(), sim: heaptest.Options{TokenTTL: time.Nanosecond},
			wantErr: []error{ErrUnauthorized}, wantReqs: map[string]int{epAuth: 1, epStatus: 1}},
		{name: "400 echoing an identity", call: "submit", sim: heaptest.Options{Rule: rejectSome},
			wantErr: []error{ErrRejected}, wantText: []string{"400", "[redacted]"}, wantReqs: map[string]int{epDeletion: 1}},
		{name: "400 echoing in other shapes", call: "submit",
			override: answer400(`{"message":"bad: ALICE.SECRET@example.COM, 9223372036854775807 and bob-identity-7731 (key sim-key-SECRET-7f3a9c)"}`),
			wantErr:  []error{ErrRejected}, wantText: []string{"bad: [redacted], [redacted] and [redacted] (key [redacted])"}},
		{name: "400 with error field", call: "submit", override: answer400(`{"error":"users malformed"}`),
			wantErr: []error{ErrRejected}, wantText: []string{"users malformed"}, noRedaction: true},
		{name: "400 without JSON", call: "submit", override: answer400(`<html>alice.secret@example.com</html>`),
			wantErr: []error{ErrRejected}, wantText: []string{"Bad Request"}, noRedaction: true},
		{name: "422", call: "submit", override: answerOn(epDeletion, 422, `{"err":{"message":"nope"}}`),
			wantErr: []error{ErrRejected}, wantText: []string{"422", "nope"}},
		{name: "404 on user_deletion", call: "submit", override: answerOn(epDeletion, 404, `not found`),
			wantErr: []error{ErrMisconfigured}, wantNot: []error{ErrNotFound, ErrRejected}},
		{name: "413", call: "submit", script: fault("user_deletion", 413),
			wantErr: []error{ErrRejected}, wantText: []string{"413"}, wantReqs: map[string]int{epDeletion: 1}},
		// Answers about heapdel's setup, not about the users: never ErrRejected.
		{name: "301 from a wrong base URL, not followed", call: "submit",
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 301, Location: "/api/public/v0/user_deletion"}},
			wantErr: []error{ErrMisconfigured}, wantText: []string{"HTTP 301", "not followed"}, wantReqs: map[string]int{epDeletion: 1}},
		{name: "308 on user_deletion, not followed", call: "submit",
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 308, Location: "/api/public/v0/user_deletion"}},
			wantErr: []error{ErrMisconfigured}, wantText: []string{"HTTP 308"}, wantReqs: map[string]int{epDeletion: 1}},
		{name: "302 on auth_token, not followed", call: "submit",
			script:  []heaptest.Fault{{Endpoint: "auth_token", Status: 302, Location: "/api/public/v0/auth_token"}},
			wantErr: []error{ErrMisconfigured}, wantReqs: map[string]int{epAuth: 1, epDeletion: 0}},
		{name: "407 from a proxy on user_deletion", call: "submit", script: fault("user_deletion", 407),
			wantErr: []error{ErrMisconfigured}, wantText: []string{"HTTP 407"}, wantReqs: map[string]int{epDeletion: 1}},
		{name: "407 from a proxy on auth_token", call: "submit", script: fault("auth_token", 407),
			wantErr: []error{ErrMisconfigured}, wantReqs: map[string]int{epAuth: 1, epDeletion: 0}},
		{name: "402 on user_deletion", call: "submit", script: fault("user_deletion", 402), wantErr: []error{ErrMisconfigured}},
		{name: "409 on user_deletion", call: "submit", script: fault("user_deletion", 409), wantErr: []error{ErrMisconfigured}},
		{name: "410 on user_deletion", call: "submit", script: fault("user_deletion", 410), wantErr: []error{ErrMisconfigured}},
		{name: "411 on user_deletion", call: "submit", script: fault("user_deletion", 411), wantErr: []error{ErrMisconfigured}},
		{name: "415 on user_deletion", call: "submit", script: fault("user_deletion", 415), wantErr: []error{ErrMisconfigured}},
		{name: "418 on user_deletion", call: "submit", script: fault("user_deletion", 418), wantErr: []error{ErrMisconfigured}},
		{name: "400 on auth_token", call: "submit", script: fault("auth_token", 400),
			wantErr: []error{ErrMisconfigured}, wantReqs: map[string]int{epAuth: 1, epDeletion: 0}},
		{name: "403 on auth_token", call: "check", script: fault("auth_token", 403), wantErr: []error{ErrMisconfigured}},
		{name: "422 on auth_token", call: "check", script: fault("auth_token", 422), wantErr: []error{ErrMisconfigured}},
		{name: "400 on deletion_status", call: "status", script: fault("deletion_status", 400), wantErr: []error{ErrMisconfigured}},
		{name: "410 on deletion_status", call: "status", script: fault("deletion_status", 410), wantErr: []error{ErrMisconfigured}},
		// A 404 is ErrNotFound only from deletion_status, with a token Heap took.
		{name: "status: 404 on auth_token", call: "status", statusID: uuid.NewString(), script: fault("auth_token", 404),
			wantErr: []error{ErrMisconfigured}, wantReqs: map[string]int{epAuth: 1, epStatus: 0}},
		{name: "status: 401 on auth_token", call: "status", statusID: uuid.NewString(), script: fault("auth_token", 401),
			wantErr: []error{ErrUnauthorized}, wantReqs: map[string]int{epAuth: 1, epStatus: 0}},
		{name: "status: token refused, then the refresh answers 404", call: "status",
			script:  []heaptest.Fault{{Endpoint: "deletion_status", Status: 401, Count: 1}, {Endpoint: "auth_token", Status: 404}},
			wantErr: []error{ErrMisconfigured}, wantReqs: map[string]int{epAuth: 2, epStatus: 1}},
		{name: "status: token refused, then the refresh is refused", call: "status",
			script:  []heaptest.Fault{{Endpoint: "deletion_status", Status: 401, Count: 1}, {Endpoint: "auth_token", Status: 401}},
			wantErr: []error{ErrUnauthorized}, wantReqs: map[string]int{epAuth: 2, epStatus: 1}},
		{name: "status: token refused, refreshed, then 404", call: "status",
			script:  []heaptest.Fault{{Endpoint: "deletion_status", Status: 401, Count: 1}, {Endpoint: "deletion_status", Status: 404}},
			wantErr: []error{ErrNotFound}, wantReqs: map[string]int{epAuth: 2, epStatus: 2}},
		{name: "429 storm", call: "submit", script: []heaptest.Fault{{Endpoint: "user_deletion", Status: 429}},
			wantErr: []error{ErrRetryable}, wantCode: 429, wantReqs: map[string]int{epDeletion: 6}},
		{name: "429 twice then ok", call: "submit", script: []heaptest.Fault{{Endpoint: "user_deletion", Status: 429, Count: 2}},
			wantReqs: map[string]int{epDeletion: 3}},
		{name: "429 with Retry-After beyond the budget", call: "submit",
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 429, RetryAfter: "120"}},
			wantErr: []error{ErrRetryable}, wantCode: 429, retryAfter: 2 * time.Minute, wantReqs: map[string]int{epDeletion: 1}},
		// A Retry-After of a day or a century is cut to MaxRetryAfter (5m).
		{name: "429 with Retry-After of a day", call: "submit",
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 429, RetryAfter: "86400"}},
			wantErr: []error{ErrRetryable}, wantCode: 429, retryAfter: 5 * time.Minute, wantReqs: map[string]int{epDeletion: 1}},
		{name: "503 with Retry-After of a century", call: "status",
			script:  []heaptest.Fault{{Endpoint: "deletion_status", Status: 503, RetryAfter: "4294967295"}},
			wantErr: []error{ErrRetryable}, wantCode: 503, retryAfter: 5 * time.Minute, wantReqs: map[string]int{epStatus: 1}},
		{name: "auth_token 429 with a far HTTP date", call: "check",
			script:  []heaptest.Fault{{Endpoint: "auth_token", Status: 429, RetryAfter: "Fri, 31 Dec 9999 23:59:59 GMT"}},
			wantErr: []error{ErrRetryable}, wantCode: 429, retryAfter: 5 * time.Minute, wantReqs: map[string]int{epAuth: 1}},
		{name: "Retry-After cut to a short MaxRetryAfter, then ok", call: "submit", cfg: func(c *Config) { c.MaxRetryAfter = 20 * time.Millisecond },
			script:   []heaptest.Fault{{Endpoint: "user_deletion", Status: 429, RetryAfter: "86400", Count: 1}},
			wantReqs: map[string]int{epDeletion: 2}},
		{name: "503 storm", call: "status", script: []heaptest.Fault{{Endpoint: "deletion_status", Status: 503}},
			wantErr: []error{ErrRetryable}, wantCode: 503, wantReqs: map[string]int{epStatus: 6}},
		{name: "500 once", call: "status", script: []heaptest.Fault{{Endpoint: "deletion_status", Status: 500, Count: 1}},
			wantResult: "complete", wantReqs: map[string]int{epStatus: 2}},
		{name: "no retries", call: "submit", cfg: func(c *Config) { c.MaxRetries = -1 },
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 502}},
			wantErr: []error{ErrRetryable}, wantCode: 502, wantReqs: map[string]int{epDeletion: 1}},
		{name: "retry budget", call: "submit", cfg: func(c *Config) {
			c.MinBackoff, c.MaxBackoff, c.RetryBudget = time.Second, time.Second, 1500*time.Millisecond
		},
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 503}},
			wantErr: []error{ErrRetryable}, wantCode: 503, wantReqs: map[string]int{epDeletion: 2}},
		{name: "auth_token 503 twice", call: "submit", script: []heaptest.Fault{{Endpoint: "auth_token", Status: 503, Count: 2}},
			wantReqs: map[string]int{epAuth: 3, epDeletion: 1}},
		{name: "auth_token 429 storm", call: "check", script: []heaptest.Fault{{Endpoint: "auth_token", Status: 429}},
			wantErr: []error{ErrRetryable}, wantCode: 429, wantText: []string{"auth_token"}, wantReqs: map[string]int{epAuth: 6}},
		{name: "dropped once", call: "submit", script: []heaptest.Fault{{Endpoint: "user_deletion", Drop: true, Count: 1}},
			wantReqs: map[string]int{epDeletion: 2}},
		{name: "dropped always", call: "submit", cfg: func(c *Config) { c.MaxRetries = 2 },
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Drop: true}},
			wantErr: []error{ErrRetryable}, wantCode: 0, wantReqs: map[string]int{epDeletion: 3}},
		{name: "timeout once", call: "submit", cfg: func(c *Config) { c.RequestTimeout = 100 * time.Millisecond },
			script:   []heaptest.Fault{{Endpoint: "user_deletion", Latency: time.Hour, Count: 1}},
			wantReqs: map[string]int{epDeletion: 2}},
		{name: "timeout always", call: "status", cfg: func(c *Config) { c.RequestTimeout = 50 * time.Millisecond; c.MaxRetries = 1 },
			script:  []heaptest.Fault{{Endpoint: "deletion_status", Latency: time.Hour}},
			wantErr: []error{ErrRetryable}, wantNot: []error{context.DeadlineExceeded}, wantCode: 0, wantText: []string{"timed out"}},
		// After any 2xx from user_deletion the users are never sent again.
		{name: "bad JSON on 201", call: "submit",
			override: answerOn(epDeletion, 201, `{"deletion_request_id":`),
			wantErr:  []error{ErrAcceptedUnreadable}, wantText: []string{"HTTP 201", `Heap sent: {"deletion_request_id":`},
			wantReqs: map[string]int{epDeletion: 1}},
		{name: "201 without id", call: "submit",
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 201, Body: `{"status":"pending"}`}},
			wantErr: []error{ErrAcceptedUnreadable}, wantText: []string{"HTTP 201", "no deletion_request_id", `Heap sent: {"status":"pending"}`},
			wantReqs: map[string]int{epDeletion: 1}},
		{name: "204 with no body", call: "submit", script: []heaptest.Fault{{Endpoint: "user_deletion", Status: 204}},
			wantErr: []error{ErrAcceptedUnreadable}, wantText: []string{"HTTP 204", "an empty body"}, wantReqs: map[string]int{epDeletion: 1}},
		{name: "200 page echoing the users and the key", call: "submit",
			script: []heaptest.Fault{{Endpoint: "user_deletion", Status: 200,
				Body: `<html>accepted {"users":[{"identity":"alice.secret@example.com"},{"user_id":8512376125342183}]} with sim-key-SECRET-7f3a9c</html>`}},
			wantErr:  []error{ErrAcceptedUnreadable},
			wantText: []string{`<html>accepted {"users":[{"identity":"[redacted]"},{"user_id":[redacted]}]} with [redacted]</html>`},
			wantReqs: map[string]int{epDeletion: 1}},
		{name: "201 with a long body", call: "submit",
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 201, Body: strings.Repeat("x", 5000)}},
			wantErr: []error{ErrAcceptedUnreadable}, wantText: []string{strings.Repeat("x", 200) + "…"},
			wantReqs: map[string]int{epDeletion: 1}},
		{name: "201 cut short", call: "submit", override: func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasSuffix(r.URL.Path, "/user_deletion") {
				return false
			}
			w.Header().Set("Content-Length", "500")
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"deletion_request_`)
			return true // net/http closes the connection: fewer bytes than declared
		},
			wantErr: []error{ErrAcceptedUnreadable}, wantText: []string{"HTTP 201", "broke off"}, wantReqs: map[string]int{epDeletion: 1}},
		{name: "bad JSON on 200 status", call: "status", statusID: uuid.NewString(), cfg: func(c *Config) { c.MaxRetries = -1 },
			override: answerOn(epStatus, 200, `[]`), wantErr: []error{ErrRetryable}, wantCode: 200},
		{name: "bad JSON token", call: "check", cfg: func(c *Config) { c.MaxRetries = -1 },
			override: answerOn(epAuth, 200, `{"access_token":""}`), wantErr: []error{ErrRetryable}, wantCode: 200},
		{name: "unknown status", call: "status", statusID: uuid.NewString(),
			override: answerOn(epStatus, 200, `{"deletion_request_id":"x","status":"failed"}`),
			wantText: []string{`unknown status "failed"`}, wantReqs: map[string]int{epStatus: 1}},
		{name: "backoff beyond ctx's deadline", call: "submit", ctxLimit: time.Minute,
			cfg:     func(c *Config) { c.MinBackoff, c.MaxBackoff, c.RetryBudget = time.Hour, time.Hour, 2*time.Hour },
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Status: 503}},
			wantErr: []error{ErrRetryable}, wantCode: 503, wantReqs: map[string]int{epDeletion: 1}},
		{name: "ctx deadline during a request", call: "submit", ctxLimit: 200 * time.Millisecond,
			script:  []heaptest.Fault{{Endpoint: "user_deletion", Latency: time.Hour}},
			wantErr: []error{context.DeadlineExceeded}, wantReqs: map[string]int{epDeletion: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOpts{sim: tt.sim, cfg: tt.cfg, override: tt.override})
			ctx := t.Context()
			if tt.ctxLimit > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxLimit)
				defer cancel()
			}
			id := tt.statusID
			if tt.call == "status" && id == "" {
				var err error
				if id, err = e.c.Submit(t.Context(), leakUsers[1:3]); err != nil {
					t.Fatalf("Submit before Status: %v", err)
				}
			}
			e.sim.Script(tt.script...)
			var (
				res string
				err error
			)
			switch tt.call {
			case "submit":
				res, err = e.c.Submit(ctx, leakUsers)
			case "status":
				if id == "-" {
					id = ""
				}
				var s Status
				s, err = e.c.Status(ctx, id)
				res = string(s)
			case "check":
				err = e.c.CheckCredentials(ctx)
			}

			if len(tt.wantErr) == 0 && len(tt.wantText) == 0 && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if (len(tt.wantErr) > 0 || len(tt.wantText) > 0) && err == nil {
				t.Fatalf("no error; want %v %q", tt.wantErr, tt.wantText)
			}
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("error %q is not %v", err, want)
				}
			}
			for _, sentinel := range all {
				wanted := false
				for _, want := range tt.wantErr {
					wanted = wanted || want == sentinel
				}
				if !wanted && err != nil && errors.Is(err, sentinel) {
					t.Errorf("error %q is %v, unexpectedly", err, sentinel)
				}
			}
			for _, not := range tt.wantNot {
				if errors.Is(err, not) {
					t.Errorf("error %q is %v", err, not)
				}
			}
			var re *RetryableError
			if errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded) {
				if re.Code != tt.wantCode || re.RetryAfter != tt.retryAfter {
					t.Errorf("RetryableError Code %d RetryAfter %s, want %d %s", re.Code, re.RetryAfter, tt.wantCode, tt.retryAfter)
				}
			}
			for _, text := range tt.wantText {
				if !strings.Contains(err.Error(), text) {
					t.Errorf("error %q does not contain %q", err, text)
				}
			}
			switch {
			case tt.wantResult != "" && res != tt.wantResult:
				t.Errorf("result %q, want %q", res, tt.wantResult)
			case tt.call == "submit" && err == nil:
				subs := e.sim.Submissions()
				if len(subs) == 0 || subs[len(subs)-1].ID != res {
					t.Errorf("Submit returned %q; the simulator has %+v", res, subs)
				}
			}
			for ep, n := range tt.wantReqs {
				if got := len(e.requests(ep)); got != n {
					t.Errorf("%s requests: %d, want %d", ep, got, n)
				}
			}
			if err != nil && len(err.Error()) > 600 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			assertNoLeak(t, e, err)
		})
	}
}

// assertNoLeak fails if an error, a log line or a metric label holds the API key,
// a token, an identity or a user id.
func assertNoLeak(t *testing.T, e *env, errs ...error) {
	t.Helper()
	forbidden := []string{testKey, e.c.cfg.APIKey}
	for _, s := range e.requests("") {
		if s.token != "" {
			forbidden = append(forbidden, s.token)
		}
	}
	for _, u := range leakUsers {
		if u.Identity != "" {
			forbidden = append(forbidden, u.Identity, strings.ToLower(u.Identity))
		} else {
			forbidden = append(forbidden, strconv.FormatUint(u.UserID, 10))
		}
	}
	var texts []string
	for _, err := range errs {
		if err != nil {
			texts = append(texts, "error: "+err.Error())
		}
	}
	texts = append(texts, "logs: "+e.logs.String())
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				texts = append(texts, "metric label: "+l.GetName()+"="+l.GetValue())
			}
		}
	}
	for _, text := range texts {
		lower := strings.ToLower(text)
		for _, f := range forbidden {
			if strings.Contains(lower, strings.ToLower(f)) {
				t.Errorf("%q leaked in %s", f, text)
			}
		}
	}
}

func TestSubmitBatchSize(t *testing.T) {
	e := newEnv(t, envOpts{sim: heaptest.Options{DiscardUsers: true}})
	users := func(n int) []User {
		u := make([]User, n)
		for i := range u {
			u[i] = User{UserID: uint64(i + 1)}
		}
		return u
	}
	tests := []struct {
		name    string
		users   []User
		wantErr error
	}{
		{"none", nil, ErrBatchSize},
		{"empty", []User{}, ErrBatchSize},
		{"10,001", users(MaxUsers + 1), ErrBatchSize},
		{"a user naming no one", []User{{UserID: 1}, {}}, ErrRejected},
		{"10,000", users(MaxUsers), nil},
		{"one", users(1), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.requests(epDeletion))
			_, err := e.c.Submit(t.Context(), tt.users)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			sent := len(e.requests(epDeletion)) - before
			if want := map[bool]int{true: 0, false: 1}[tt.wantErr != nil]; sent != want {
				t.Errorf("%d requests sent, want %d", sent, want)
			}
		})
	}
	if got := e.sim.SubmittedUsers(); got != MaxUsers+1 {
		t.Errorf("SubmittedUsers() = %d, want %d", got, MaxUsers+1)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "heapdel_heap_batch_users" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() != MaxUsers+1 {
				t.Errorf("batch_users histogram: %d batches, %v users; want 2, %d", h.GetSampleCount(), h.GetSampleSum(), MaxUsers+1)
			}
		}
	}
}

func TestAcceptedUnreadableIsNeverResent(t *testing.T) {
	// Heap accepts and records the users, but the answer's body is not the
	// documented one: one POST, one deletion request at Heap, and an error that
	// tells the caller to hold the users.
	e := newEnv(t, envOpts{})
	e.sim.Script(heaptest.Fault{Endpoint: "user_deletion", Body: "<html>upstream rewrote this</html>"})
	_, err := e.c.Submit(t.Context(), leakUsers)
	if !errors.Is(err, ErrAcceptedUnreadable) || errors.Is(err, ErrRetryable) {
		t.Fatalf("got %v, want ErrAcceptedUnreadable only", err)
	}
	if !strings.Contains(err.Error(), "HTTP 201") || !strings.Contains(err.Error(), "<html>upstream rewrote this</html>") {
		t.Errorf("error %q does not say what Heap sent", err)
	}
	if n := e.sim.Requests("user_deletion"); n != 1 {
		t.Errorf("%d user_deletion requests, want exactly 1", n)
	}
	if n := len(e.sim.Submissions()); n != 1 {
		t.Errorf("Heap holds %d deletion requests, want 1", n)
	}
	assertNoLeak(t, e, err)
}

func TestProxyEchoesAreRedacted(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte(testApp + ":" + testKey))
	// A proxy that refuses every request and echoes its Authorization header,
	// and the credentials without the header, in a JSON error.
	echo := func(w http.ResponseWriter, r *http.Request) bool {
		h := r.Header.Get("Authorization")
		_, cred, _ := strings.Cut(h, " ")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusProxyAuthRequired)
		fmt.Fprintf(w, `{"message":"denied: Authorization: %s (credentials %s, %s)"}`, h, cred, strings.TrimRight(cred, "="))
		return true
	}
	tests := []struct {
		name      string
		fresh     bool // the token is cached first, so the proxy sees the Bearer one
		forbidden []string
	}{
		{"Basic on auth_token", false, []string{basic, strings.TrimRight(basic, "=")}},
		{"Bearer on user_deletion", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var proxy atomic.Bool
			e := newEnv(t, envOpts{override: func(w http.ResponseWriter, r *http.Request) bool {
				return proxy.Load() && echo(w, r)
			}})
			if tt.fresh {
				if _, err := e.c.Submit(t.Context(), leakUsers[1:2]); err != nil {
					t.Fatal(err)
				}
			}
			proxy.Store(true)
			_, err := e.c.Submit(t.Context(), leakUsers)
			if !errors.Is(err, ErrMisconfigured) || !strings.Contains(err.Error(), "HTTP 407") {
				t.Fatalf("got %v, want ErrMisconfigured with HTTP 407", err)
			}
			if !strings.Contains(err.Error(), " [redacted] (credentials [redacted], [redacted])") {
				t.Errorf("error %q does not show the redacted echo", err)
			}
			for _, f := range tt.forbidden {
				if strings.Contains(err.Error(), f) {
					t.Errorf("error %q shows %q", err, f)
				}
			}
			assertNoLeak(t, e, err)
		})
	}
}

func TestUnicodeCaseEchoRedacted(t *testing.T) {
	users := []User{{Identity: "älice@example.de"}, {Identity: "Jane Q Doe"}}
	e := newEnv(t, envOpts{override: answer400(`{"message":"users ÄLICE@EXAMPLE.DE and \"jane\u00a0q doe\" refused"}`)})
	_, err := e.c.Submit(t.Context(), users)
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
	if want := `users [redacted] and "[redacted]" refused`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not hold %q", err, want)
	}
}

func TestUserIDsRoundTrip(t *testing.T) {
	e := newEnv(t, envOpts{})
	users := []User{
		{UserID: math.MaxInt64},
		{UserID: math.MaxUint64},
		{UserID: 1<<53 + 1},
		{UserID: 1},
		{Identity: "ünï\"cödé\\\n\t\u2028<&>@example.com"},
		{Identity: "42"},
	}
	if _, err := e.c.Submit(t.Context(), users); err != nil {
		t.Fatal(err)
	}
	got := e.sim.Submissions()[0].Users
	want := []heaptest.User{
		{UserID: "9223372036854775807"},
		{UserID: "18446744073709551615"},
		{UserID: "9007199254740993"},
		{UserID: "1"},
		{Identity: users[4].Identity},
		{Identity: "42"},
	}
	if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
		t.Errorf("simulator received %q, want %q", got, want)
	}
}

func TestTokenExpiresMidRun(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := t.Context()
	id, err := e.c.Submit(ctx, leakUsers)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.ExpireTokens() // Heap drops the token before our lifetime says so
	if _, err := e.c.Status(ctx, id); err != nil {
		t.Fatalf("Status after the token expired: %v", err)
	}
	if _, err := e.c.Submit(ctx, leakUsers); err != nil {
		t.Fatalf("Submit with the new token: %v", err)
	}
	if got := len(e.requests(epAuth)); got != 2 {
		t.Errorf("%d token fetches, want 2", got)
	}
	if got := testutil.ToFloat64(e.c.m.retries.WithLabelValues(epStatus, reasonTokenExpired)); got != 1 {
		t.Errorf("token_expired retries = %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.c.m.tokens.WithLabelValues(fetchOK)); got != 2 {
		t.Errorf("token fetches ok = %v, want 2", got)
	}
	assertNoLeak(t, e)
}

func TestAPIKeyFileRotation(t *testing.T) {
	const key1, key2 = "key-one-SECRET-91b2", "key-two-SECRET-4c7d"
	path := filepath.Join(t.TempDir(), "api-key")
	write := func(key string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(key1)
	e := newEnv(t, envOpts{sim: heaptest.Options{AppID: testApp, APIKey: key1},
		cfg: func(c *Config) { c.APIKey, c.APIKeyFile = "", path }})
	clk := &clock{t: time.Now()}
	e.c.now = clk.Now
	ctx := t.Context()
	var errs []error
	submit := func() error {
		_, err := e.c.Submit(ctx, leakUsers)
		errs = append(errs, err)
		return err
	}

	if err := submit(); err != nil {
		t.Fatalf("with the file's key: %v", err)
	}
	// Heap's key is rotated; the mounted Secret is not updated yet.
	e.sim.SetAPIKey(testApp, key2)
	e.sim.ExpireTokens()
	steps := []struct {
		name      string
		advance   time.Duration
		file      string // written before the step, if set
		wantErr   error
		wantFetch int // auth_token requests so far
	}{
		{"file read moments ago: not read again", 0, "", ErrUnauthorized, 2},
		{"file read again, same key", keyRereadInterval, "", ErrUnauthorized, 3},
		{"file updated, but read less than 10s ago", keyRereadInterval - time.Second, key2, ErrUnauthorized, 4},
		{"file read again, new key: fetch retried once", time.Second, "", nil, 6},
		{"the new key stays", time.Minute, "", nil, 6},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		if s.file != "" {
			write(s.file)
		}
		err := submit()
		if (s.wantErr == nil) != (err == nil) || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: got %v, want %v", s.name, err, s.wantErr)
		}
		if got := len(e.requests(epAuth)); got != s.wantFetch {
			t.Fatalf("%s: %d token fetches, want %d", s.name, got, s.wantFetch)
		}
	}
	if n := len(e.sim.Submissions()); n != 3 {
		t.Errorf("%d submissions, want 3", n)
	}
	texts := e.logs.String()
	for _, err := range errs {
		if err != nil {
			texts += err.Error()
		}
	}
	for _, k := range []string{key1, key2} {
		if strings.Contains(texts, k) {
			t.Errorf("the key %q shows in an error or a log line", k)
		}
	}
	if !strings.Contains(texts, "the key file holds a new one") {
		t.Errorf("the new key was not logged:\n%s", texts)
	}
}

func TestAPIKeyFileConfig(t *testing.T) {
	dir := t.TempDir()
	good, empty := filepath.Join(dir, "key"), filepath.Join(dir, "empty")
	if err := os.WriteFile(good, []byte("  file-key-SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key, file string
		wantErr         string
	}{
		{"file only", "", good, ""},
		{"file wins over the key", "given-key", good, ""},
		{"neither", "", "", "APIKey or APIKeyFile"},
		{"missing file", "", filepath.Join(dir, "nope"), "APIKeyFile"},
		{"empty file", "", empty, "APIKeyFile"},
		{"a directory", "", dir, "APIKeyFile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{AppID: "a", APIKey: tt.key, APIKeyFile: tt.file})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.apiKey() != "file-key-SECRET" {
				t.Errorf("key in use is not the file's, trimmed")
			}
		})
	}
}

func TestTokenLifetime(t *testing.T) {
	e := newEnv(t, envOpts{sim: heaptest.Options{TokenTTL: time.Hour}, cfg: func(c *Config) { c.TokenLifetime = time.Minute }})
	clk := &clock{t: time.Now()}
	e.c.now = clk.Now
	ctx := t.Context()
	steps := []struct {
		advance   time.Duration
		wantFetch int
	}{{0, 1}, {time.Minute - 1, 1}, {1, 2}, {30 * time.Second, 2}, {time.Minute, 3}}
	for i, s := range steps {
		clk.Add(s.advance)
		if _, err := e.c.Status(ctx, uuid.NewString()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := len(e.requests(epAuth)); got != s.wantFetch {
			t.Fatalf("step %d: %d token fetches, want %d", i, got, s.wantFetch)
		}
	}
	if got := testutil.ToFloat64(e.c.m.retries.WithLabelValues(epStatus, reasonTokenExpired)); got != 0 {
		t.Errorf("a token was refreshed by a 401, not by its lifetime")
	}
}

func TestConcurrentCallersShareOneTokenFetch(t *testing.T) {
	e := newEnv(t, envOpts{})
	// The token fetch is slow, so that every caller arrives while it is in flight.
	e.sim.Script(heaptest.Fault{Endpoint: "auth_token", Latency: 200 * time.Millisecond, Count: 1})
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = e.c.Submit(t.Context(), []User{{UserID: uint64(i + 1)}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if got := len(e.requests(epAuth)); got != 1 {
		t.Errorf("%d token fetches, want 1", got)
	}
	if got := e.sim.Requests("user_deletion"); got != 20 {
		t.Errorf("%d submissions, want 20", got)
	}
}

func TestTokenWaitersRespectTheirContext(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sim.Script(heaptest.Fault{Endpoint: "auth_token", Latency: time.Hour, Count: 1})
	leaderCtx, cancelLeader := context.WithCancel(t.Context())
	leader := make(chan error, 1)
	go func() { _, err := e.c.Submit(leaderCtx, leakUsers); leader <- err }()
	waitFor(t, "the token fetch", func() bool { return len(e.requests(epAuth)) == 1 })

	waiterCtx, cancelWaiter := context.WithCancel(t.Context())
	waiter := make(chan error, 1)
	go func() { _, err := e.c.Status(waiterCtx, uuid.NewString()); waiter <- err }()
	time.Sleep(20 * time.Millisecond) // let it join the fetch; not needed for correctness
	cancelWaiter()
	if err := <-waiter; !errors.Is(err, context.Canceled) {
		t.Errorf("waiter: %v, want context.Canceled", err)
	}
	// A third caller, still patient, takes over when the fetcher gives up.
	third := make(chan error, 1)
	go func() { _, err := e.c.Submit(t.Context(), leakUsers); third <- err }()
	cancelLeader()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: %v, want context.Canceled", err)
	}
	if err := <-third; err != nil {
		t.Errorf("third caller: %v", err)
	}
	assertNoLeak(t, e)
}

func TestRetryAfterObeyed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header func(now time.Time) string
		// earliest returns when the retry may arrive, given the first answer's time.
		earliest func(first time.Time, header string) time.Time
	}{
		{"seconds", func(time.Time) string { return "1" },
			func(first time.Time, _ string) time.Time { return first.Add(time.Second) }},
		{"HTTP date", func(now time.Time) string { return now.Add(2 * time.Second).UTC().Format(http.TimeFormat) },
			func(_ time.Time, h string) time.Time { d, _ := http.ParseTime(h); return d }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOpts{cfg: func(c *Config) { c.RetryBudget = 10 * time.Second }})
			h := tt.header(time.Now())
			e.sim.Script(heaptest.Fault{Endpoint: "user_deletion", Status: 429, RetryAfter: h, Count: 1})
			if _, err := e.c.Submit(t.Context(), leakUsers); err != nil {
				t.Fatal(err)
			}
			reqs := e.requests(epDeletion)
			if len(reqs) != 2 {
				t.Fatalf("%d user_deletion requests, want 2", len(reqs))
			}
			if earliest := tt.earliest(reqs[0].at, h); reqs[1].at.Before(earliest) {
				t.Errorf("retry came at %s, before Retry-After %q allowed (%s)", reqs[1].at, h, earliest)
			}
			if got := testutil.ToFloat64(e.c.m.retries.WithLabelValues(epDeletion, reasonRateLimited)); got != 1 {
				t.Errorf("rate_limited retries = %v, want 1", got)
			}
		})
	}
}

func TestRetryAfterClampedCountedAndLoggedOnce(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sim.Script(heaptest.Fault{Endpoint: "user_deletion", Status: 429, RetryAfter: "86400"})
	for range 3 {
		_, err := e.c.Submit(t.Context(), leakUsers)
		var re *RetryableError
		if !errors.As(err, &re) || re.RetryAfter != 5*time.Minute {
			t.Fatalf("got %v, want a RetryableError with RetryAfter 5m", err)
		}
	}
	if got := testutil.ToFloat64(e.c.m.retryAfterClamped.WithLabelValues(epDeletion)); got != 3 {
		t.Errorf("retry_after_clamped{user_deletion} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(e.c.m.retryAfterClamped.WithLabelValues(epStatus)); got != 0 {
		t.Errorf("retry_after_clamped{deletion_status} = %v, want 0", got)
	}
	if n := strings.Count(e.logs.String(), "longer than MaxRetryAfter"); n != 1 {
		t.Errorf("the cap was logged %d times, want once per client:\n%s", n, e.logs.String())
	}
	if !strings.Contains(e.logs.String(), `"level":"warn"`) {
		t.Errorf("no warning logged:\n%s", e.logs.String())
	}
	if n, err := testutil.GatherAndCount(e.reg, "heapdel_heap_retry_after_clamped_total"); err != nil || n != 3 {
		t.Errorf("heapdel_heap_retry_after_clamped_total series: %d, %v; want one per endpoint", n, err)
	}
	assertNoLeak(t, e)
}

func TestRateLimit(t *testing.T) {
	t.Run("burst, then nothing", func(t *testing.T) {
		// At 0.001 requests/s, the bucket refills one request per 1000 s: only
		// Burst requests can go out, whatever else happens, and the next wait would
		// outlast ctx's deadline so the call returns at once.
		for _, burst := range []int{1, 3, 5} {
			t.Run(strconv.Itoa(burst), func(t *testing.T) {
				e := newEnv(t, envOpts{cfg: func(c *Config) { c.Rate, c.Burst, c.MaxRetries = 0.001, burst, 20 }})
				e.sim.Script(heaptest.Fault{Endpoint: "user_deletion", Status: 503})
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				_, err := e.c.Submit(ctx, leakUsers)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("got %v, want a deadline error from the limiter", err)
				}
				if got := len(e.requests("")); got != burst {
					t.Errorf("%d requests reached Heap, want exactly the burst, %d", got, burst)
				}
				assertNoLeak(t, e, err)
			})
		}
	})
	t.Run("within a window", func(t *testing.T) {
		// A token bucket lets at most Burst + Rate×elapsed requests through.
		const rps, burst = 40.0, 2
		start := time.Now()
		e := newEnv(t, envOpts{cfg: func(c *Config) { c.Rate, c.Burst = rps, burst }})
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		var wg sync.WaitGroup
		for range 30 {
			wg.Go(func() {
				for ctx.Err() == nil {
					e.c.Status(ctx, uuid.NewString())
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		got := len(e.requests(""))
		if limit := burst + int(rps*elapsed.Seconds()); got > limit {
			t.Errorf("%d requests in %s, more than the bucket allows (%d)", got, elapsed, limit)
		}
		if got < burst {
			t.Errorf("only %d requests went out", got)
		}
	})
}

func TestCancelStopsRetriesAtOnce(t *testing.T) {
	tests := []struct {
		name   string
		script heaptest.Fault
	}{
		{"during backoff", heaptest.Fault{Endpoint: "user_deletion", Status: 503}},
		{"during Retry-After", heaptest.Fault{Endpoint: "user_deletion", Status: 429, RetryAfter: "3000"}},
		{"during a request", heaptest.Fault{Endpoint: "user_deletion", Latency: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOpts{cfg: func(c *Config) {
				c.MinBackoff, c.MaxBackoff, c.RetryBudget, c.RequestTimeout = time.Hour, time.Hour, 2*time.Hour, 2*time.Hour
			}})
			e.sim.Script(tt.script)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { _, err := e.c.Submit(ctx, leakUsers); done <- err }()
			waitFor(t, "the first attempt", func() bool { return e.sim.Requests("user_deletion") == 1 })
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("got %v, want context.Canceled", err)
				}
				assertNoLeak(t, e, err)
			case <-time.After(30 * time.Second): // the waits being cut short are an hour long
				t.Fatal("Submit kept waiting after its context was canceled")
			}
			if got := e.sim.Requests("user_deletion"); got != 1 {
				t.Errorf("%d attempts, want 1", got)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sim.Script(heaptest.Fault{Endpoint: "user_deletion", Status: 503, Count: 1})
	if _, err := e.c.Submit(t.Context(), leakUsers); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"requests auth_token 200", testutil.ToFloat64(e.c.m.requests.WithLabelValues(epAuth, "200")), 1},
		{"requests user_deletion 503", testutil.ToFloat64(e.c.m.requests.WithLabelValues(epDeletion, "503")), 1},
		{"requests user_deletion 201", testutil.ToFloat64(e.c.m.requests.WithLabelValues(epDeletion, "201")), 1},
		{"retries server_error", testutil.ToFloat64(e.c.m.retries.WithLabelValues(epDeletion, reasonServerError)), 1},
		{"token fetches ok", testutil.ToFloat64(e.c.m.tokens.WithLabelValues(fetchOK)), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	n, err := testutil.GatherAndCount(e.reg, "heapdel_heap_batch_users", "heapdel_heap_request_duration_seconds")
	if err != nil || n != 1+2 {
		t.Errorf("histogram series: %d, %v; want 3", n, err)
	}
	// A failing token fetch inside Submit counts as an auth_token retry.
	e.c.tok.invalidate(e.c.tok.gen)
	e.sim.Script(heaptest.Fault{Endpoint: "auth_token", Status: 429, Count: 1})
	if _, err := e.c.Submit(t.Context(), leakUsers); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.c.m.retries.WithLabelValues(epAuth, reasonRateLimited)); got != 1 {
		t.Errorf("auth_token rate_limited retries = %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.c.m.tokens.WithLabelValues(fetchError)); got != 1 {
		t.Errorf("token fetches error = %v, want 1", got)
	}
	// A second client on the same registry shares the metrics.
	if _, err := New(Config{BaseURL: e.url, AppID: testApp, APIKey: testKey, Registerer: e.reg}); err != nil {
		t.Errorf("second client on one registry: %v", err)
	}
}

func BenchmarkSubmit(b *testing.B) {
	srv := heaptest.NewServer(heaptest.Options{DiscardUsers: true})
	defer srv.Close()
	c, err := New(Config{BaseURL: srv.URL, AppID: "sim-app", APIKey: "sim-key", Rate: math.Inf(1)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.hc.CloseIdleConnections()
	users := make([]User, MaxUsers)
	for i := range users {
		if i%2 == 0 {
			users[i] = User{UserID: 1<<60 + uint64(i)}
		} else {
			users[i] = User{Identity: "user" + strconv.Itoa(i) + "@example.com"}
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Submit(ctx, users); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*MaxUsers)/b.Elapsed().Seconds(), "users/s")
}
