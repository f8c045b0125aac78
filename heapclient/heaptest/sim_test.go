package heaptest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable time source for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type reply struct {
	code   int
	header http.Header
	body   map[string]any
	raw    string
}

// do serves one request on sim directly. auth is "basic:app:key", "bearer:tok" or "".
func do(t *testing.T, sim http.Handler, method, path, auth, body string) reply {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	switch {
	case strings.HasPrefix(auth, "basic:"):
		app, key, _ := strings.Cut(strings.TrimPrefix(auth, "basic:"), ":")
		r.SetBasicAuth(app, key)
	case strings.HasPrefix(auth, "bearer:"):
		r.Header.Set("Authorization", "Bearer "+strings.TrimPrefix(auth, "bearer:"))
	}
	w := httptest.NewRecorder()
	sim.ServeHTTP(w, r)
	rep := reply{code: w.Code, header: w.Header(), raw: w.Body.String()}
	if err := json.Unmarshal(w.Body.Bytes(), &rep.body); err != nil && w.Body.Len() > 0 {
		t.Fatalf("%s %s: answer is not JSON: %q", method, path, w.Body.String())
	}
	return rep
}

func token(t *testing.T, sim http.Handler, app, key string) string {
	t.Helper()
	rep := do(t, sim, http.MethodPost, "/api/public/v0/auth_token", "basic:"+app+":"+key, "")
	if rep.code != http.StatusOK {
		t.Fatalf("auth_token: got %d %s", rep.code, rep.raw)
	}
	tok, _ := rep.body["access_token"].(string)
	if tok == "" {
		t.Fatalf("auth_token: no access_token in %s", rep.raw)
	}
	return tok
}

func errMessage(rep reply) string {
	e, _ := rep.body["err"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

func TestAuthToken(t *testing.T) {
	sim := heaptest.New(heaptest.Options{AppID: "app1", APIKey: "key1", Apps: map[string]string{"app2": "key2"}})
	tests := []struct {
		name   string
		method string
		auth   string
		want   int
	}{
		{"main app", http.MethodPost, "basic:app1:key1", 200},
		{"extra app", http.MethodPost, "basic:app2:key2", 200},
		{"wrong key", http.MethodPost, "basic:app1:key2", 401},
		{"unknown app", http.MethodPost, "basic:app3:key1", 401},
		{"empty key", http.MethodPost, "basic:app1:", 401},
		{"no auth", http.MethodPost, "", 401},
		{"bearer instead of basic", http.MethodPost, "bearer:key1", 401},
		{"GET", http.MethodGet, "basic:app1:key1", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := do(t, sim, tt.method, "/api/public/v0/auth_token", tt.auth, "")
			if rep.code != tt.want {
				t.Fatalf("got %d %s, want %d", rep.code, rep.raw, tt.want)
			}
			if tt.want == 200 {
				if tok, _ := rep.body["access_token"].(string); tok == "" {
					t.Fatalf("no access_token in %s", rep.raw)
				}
			} else if errMessage(rep) == "" {
				t.Fatalf("no err.message in %s", rep.raw)
			}
		})
	}
}

func TestSetAPIKey(t *testing.T) {
	sim := heaptest.New(heaptest.Options{AppID: "app1", APIKey: "key1"})
	tok := token(t, sim, "app1", "key1")
	sim.SetAPIKey("app1", "key2")
	if rep := do(t, sim, http.MethodPost, "/api/public/v0/auth_token", "basic:app1:key1", ""); rep.code != 401 {
		t.Errorf("old key after rotation: got %d, want 401", rep.code)
	}
	token(t, sim, "app1", "key2")
	if rep := do(t, sim, "GET", "/api/public/v0/deletion_status/x", "bearer:"+tok, ""); rep.code != 404 {
		t.Errorf("a token issued before the rotation: got %d, want 404 (still valid)", rep.code)
	}
}

func TestTokenExpiry(t *testing.T) {
	clk := newClock()
	sim := heaptest.New(heaptest.Options{TokenTTL: time.Minute, Now: clk.Now})
	tok := token(t, sim, "sim-app", "sim-key")
	submit := func() int {
		return do(t, sim, http.MethodPost, "/api/public/v0/user_deletion", "bearer:"+tok, `{"users":[{"user_id":1}]}`).code
	}
	if got := submit(); got != 201 {
		t.Fatalf("fresh token: got %d, want 201", got)
	}
	clk.Add(time.Minute - time.Nanosecond)
	if got := submit(); got != 201 {
		t.Fatalf("token just before TTL: got %d, want 201", got)
	}
	clk.Add(time.Nanosecond)
	if got := submit(); got != 401 {
		t.Fatalf("token at TTL: got %d, want 401", got)
	}
	tok = token(t, sim, "sim-app", "sim-key")
	if got := submit(); got != 201 {
		t.Fatalf("new token: got %d, want 201", got)
	}
	sim.ExpireTokens()
	if got := submit(); got != 401 {
		t.Fatalf("after ExpireTokens: got %d, want 401", got)
	}
	for _, bad := range []string{"", "bearer:", "bearer:made-up"} {
		if got := do(t, sim, http.MethodPost, "/api/public/v0/user_deletion", bad, `{"users":[{"user_id":1}]}`).code; got != 401 {
			t.Errorf("auth %q: got %d, want 401", bad, got)
		}
	}
}

func TestUserDeletionAccepted(t *testing.T) {
	sim := heaptest.New(heaptest.Options{})
	tok := token(t, sim, "sim-app", "sim-key")
	rep := do(t, sim, http.MethodPost, "/api/public/v0/user_deletion", "bearer:"+tok,
		`{"users":[{"user_id":9223372036854775807},{"user_id":18446744073709551615},{"identity":"Al\"ice@example.com"},{"user_id":0}]}`)
	if rep.code != http.StatusCreated {
		t.Fatalf("got %d %s, want 201", rep.code, rep.raw)
	}
	id, _ := rep.body["deletion_request_id"].(string)
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 4 {
		t.Fatalf("deletion_request_id %q is not a UUID v4 (%v)", id, err)
	}
	if got := rep.body["status"]; got != "pending" {
		t.Errorf("status = %v, want pending", got)
	}
	if loc, _ := rep.body["deletion_request_location"].(string); !strings.HasSuffix(loc, "/api/public/v0/deletion_status/"+id) || !strings.HasPrefix(loc, "http://") {
		t.Errorf("deletion_request_location = %q", loc)
	}
	subs := sim.Submissions()
	if len(subs) != 1 || subs[0].ID != id {
		t.Fatalf("Submissions() = %+v", subs)
	}
	want := []heaptest.User{{UserID: "9223372036854775807"}, {UserID: "18446744073709551615"}, {Identity: `Al"ice@example.com`}, {UserID: "0"}}
	if fmt.Sprint(subs[0].Users) != fmt.Sprint(want) {
		t.Errorf("users = %q, want %q", subs[0].Users, want)
	}
	if got := sim.SubmittedUsers(); got != 4 {
		t.Errorf("SubmittedUsers() = %d, want 4", got)
	}
	if d, ok := sim.Deletion(id); !ok || d.Users != 4 || d.Status != "complete" {
		t.Errorf("Deletion(%s) = %+v, %v", id, d, ok)
	}
}

func TestUserDeletionBadRequests(t *testing.T) {
	sim := heaptest.New(heaptest.Options{})
	tok := token(t, sim, "sim-app", "sim-key")
	many := `{"users":[` + strings.Repeat(`{"user_id":1},`, 10000) + `{"user_id":1}]}`
	tests := []struct {
		name, body string
		want       string // part of err.message
	}{
		{"invalid JSON", `{"users":[`, "invalid JSON"},
		{"trailing data", `{"users":[{"user_id":1}]} {}`, "invalid JSON"},
		{"not an object", `[]`, "invalid JSON"},
		{"no users", `{}`, "empty"},
		{"empty users", `{"users":[]}`, "empty"},
		{"10001 users", many, "10000"},
		{"both fields", `{"users":[{"user_id":1,"identity":"a@example.com"}]}`, "exactly one"},
		{"neither field", `{"users":[{"user_id":1},{}]}`, "users[1]"},
		{"string user_id", `{"users":[{"user_id":"123"}]}`, "integer"},
		{"float user_id", `{"users":[{"user_id":1.5}]}`, "integer"},
		{"exponent user_id", `{"users":[{"user_id":1e3}]}`, "integer"},
		{"negative user_id", `{"users":[{"user_id":-1}]}`, "integer"},
		{"null user_id", `{"users":[{"user_id":null}]}`, "integer"},
		{"empty identity", `{"users":[{"identity":""}]}`, "identity"},
		{"number identity", `{"users":[{"identity":5}]}`, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := do(t, sim, http.MethodPost, "/api/public/v0/user_deletion", "bearer:"+tok, tt.body)
			if rep.code != http.StatusBadRequest || !strings.Contains(errMessage(rep), tt.want) {
				t.Fatalf("got %d %s, want 400 with err.message containing %q", rep.code, rep.raw, tt.want)
			}
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/api/public/v0/user_deletion", strings.NewReader(`{"users":[{"user_id":1}]}`))
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("Content-Type", "text/plain")
		w := httptest.NewRecorder()
		sim.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest {
			t.Fatalf("got %d, want 400", w.Code)
		}
	})
	if n := len(sim.Submissions()); n != 0 {
		t.Errorf("%d submissions recorded for bad requests", n)
	}
}

func TestDeletionStatusLazy(t *testing.T) {
	clk := newClock()
	tests := []struct {
		name  string
		opts  heaptest.Options
		users string
		after time.Duration
		want  []string // status now, then after `after`
	}{
		{"complete at once", heaptest.Options{}, `[{"user_id":1}]`, time.Hour, []string{"complete", "complete"}},
		{"after delay", heaptest.Options{CompleteAfter: time.Hour}, `[{"user_id":1}]`, time.Hour, []string{"pending", "complete"}},
		{"not yet", heaptest.Options{CompleteAfter: time.Hour}, `[{"user_id":1}]`, time.Hour - 1, []string{"pending", "pending"}},
		{"never", heaptest.Options{NeverComplete: true}, `[{"user_id":1}]`, 1000 * time.Hour, []string{"pending", "pending"}},
		{"rule hang", heaptest.Options{Rule: hangOrReject}, `[{"user_id":1},{"identity":"hang@example.com"}]`, 1000 * time.Hour, []string{"pending", "pending"}},
		{"rule other users", heaptest.Options{Rule: hangOrReject}, `[{"user_id":1},{"identity":"ok@example.com"}]`, 0, []string{"complete", "complete"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Now = clk.Now
			sim := heaptest.New(opts)
			tok := token(t, sim, "sim-app", "sim-key")
			rep := do(t, sim, http.MethodPost, "/api/public/v0/user_deletion", "bearer:"+tok, `{"users":`+tt.users+`}`)
			if rep.code != 201 {
				t.Fatalf("submit: %d %s", rep.code, rep.raw)
			}
			id := rep.body["deletion_request_id"].(string)
			status := func() string {
				t.Helper()
				rep := do(t, sim, http.MethodGet, "/api/public/v0/deletion_status/"+id, "bearer:"+tok, "")
				if rep.code != 200 || rep.body["deletion_request_id"] != id {
					t.Fatalf("status: %d %s", rep.code, rep.raw)
				}
				d, ok := sim.Deletion(id)
				if !ok || d.Status != rep.body["status"] {
					t.Fatalf("Deletion() = %+v, %v; endpoint says %v", d, ok, rep.body["status"])
				}
				return rep.body["status"].(string)
			}
			if got := status(); got != tt.want[0] {
				t.Errorf("now: %s, want %s", got, tt.want[0])
			}
			clk.Add(tt.after)
			tok = token(t, sim, "sim-app", "sim-key") // the old one may have expired
			if got := status(); got != tt.want[1] {
				t.Errorf("after %s: %s, want %s", tt.after, got, tt.want[1])
			}
		})
	}
}

func hangOrReject(u heaptest.User) heaptest.Outcome {
	switch {
	case strings.HasPrefix(u.Identity, "hang@"):
		return heaptest.OutcomeHang
	case strings.HasPrefix(u.Identity, "reject@"), u.UserID == "666":
		return heaptest.OutcomeReject
	}
	return heaptest.OutcomeComplete
}

func TestRuleReject(t *testing.T) {
	sim := heaptest.New(heaptest.Options{Rule: hangOrReject})
	tok := token(t, sim, "sim-app", "sim-key")
	for _, users := range []string{`[{"user_id":1},{"identity":"reject@example.com"}]`, `[{"user_id":666}]`} {
		rep := do(t, sim, http.MethodPost, "/api/public/v0/user_deletion", "bearer:"+tok, `{"users":`+users+`}`)
		if rep.code != 400 {
			t.Fatalf("%s: got %d %s, want 400", users, rep.code, rep.raw)
		}
		// The message echoes the user on purpose, so that clients must redact it.
		if m := errMessage(rep); !strings.Contains(m, "reject@example.com") && !strings.Contains(m, "666") {
			t.Errorf("message %q does not echo the user", m)
		}
	}
	if len(sim.Submissions()) != 0 || sim.SubmittedUsers() != 0 {
		t.Errorf("rejected batches were recorded")
	}
}

func TestDeletionStatusNotFound(t *testing.T) {
	sim := heaptest.New(heaptest.Options{Apps: map[string]string{"other": "other-key"}})
	tok := token(t, sim, "sim-app", "sim-key")
	other := token(t, sim, "other", "other-key")
	rep := do(t, sim, http.MethodPost, "/api/public/v0/user_deletion", "bearer:"+tok, `{"users":[{"user_id":1}]}`)
	id := rep.body["deletion_request_id"].(string)
	tests := []struct {
		name, tok, id string
		want          int
	}{
		{"own", tok, id, 200},
		{"unknown id", tok, uuid.NewString(), 404},
		{"empty id", tok, "", 404},
		{"another app's id", other, id, 404},
		{"bad token", "nope", id, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := do(t, sim, http.MethodGet, "/api/public/v0/deletion_status/"+tt.id, "bearer:"+tt.tok, "")
			if rep.code != tt.want {
				t.Fatalf("got %d %s, want %d", rep.code, rep.raw, tt.want)
			}
			if tt.want != 200 && errMessage(rep) == "" {
				t.Errorf("no err.message in %s", rep.raw)
			}
		})
	}
	if got := do(t, sim, http.MethodGet, "/api/public/v0/elsewhere", "", "").code; got != 404 {
		t.Errorf("unknown path: %d, want 404", got)
	}
	if got := do(t, sim, http.MethodPost, "/api/public/v0/deletion_status/"+id, "bearer:"+tok, "").code; got != 405 {
		t.Errorf("POST deletion_status: %d, want 405", got)
	}
}

func TestFaultScript(t *testing.T) {
	clk := newClock()
	sim := heaptest.New(heaptest.Options{Now: clk.Now})
	tok := token(t, sim, "sim-app", "sim-key")
	sim.Script(
		heaptest.Fault{Endpoint: "user_deletion", Status: 503, Count: 2},
		heaptest.Fault{Status: 429, RetryAfter: "7", For: 30 * time.Second},
		heaptest.Fault{Endpoint: "deletion_status", Status: 500, Count: 1},
	)
	submit := func() reply {
		return do(t, sim, http.MethodPost, "/api/public/v0/user_deletion", "bearer:"+tok, `{"users":[{"user_id":1}]}`)
	}
	steps := []struct {
		name       string
		req        func() reply
		advance    time.Duration // before the request
		want       int
		retryAfter string
	}{
		{"status does not match stage 1", func() reply { return do(t, sim, "GET", "/api/public/v0/deletion_status/x", "bearer:"+tok, "") }, 0, 404, ""},
		{"stage 1, 1st", submit, 0, 503, ""},
		{"stage 1, 2nd", submit, 0, 503, ""},
		{"stage 2 starts", submit, 0, 429, "7"},
		{"stage 2 on auth too", func() reply { return do(t, sim, "POST", "/api/public/v0/auth_token", "basic:sim-app:sim-key", "") }, 10 * time.Second, 429, "7"},
		{"stage 2 near its end", submit, 20*time.Second - 1, 429, "7"},
		{"stage 3 ignores submissions", submit, 1, 201, ""},
		{"stage 3 hits status", func() reply { return do(t, sim, "GET", "/api/public/v0/deletion_status/x", "bearer:"+tok, "") }, 0, 500, ""},
		{"script over", func() reply { return do(t, sim, "GET", "/api/public/v0/deletion_status/x", "bearer:"+tok, "") }, 0, 404, ""},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		rep := s.req()
		if rep.code != s.want || rep.header.Get("Retry-After") != s.retryAfter {
			t.Fatalf("%s: got %d Retry-After %q, want %d %q", s.name, rep.code, rep.header.Get("Retry-After"), s.want, s.retryAfter)
		}
		if s.want >= 400 && errMessage(rep) == "" {
			t.Fatalf("%s: no err.message in %s", s.name, rep.raw)
		}
	}
	if got, want := sim.Requests("user_deletion"), 5; got != want {
		t.Errorf("Requests(user_deletion) = %d, want %d", got, want)
	}
	if got, want := sim.Requests(""), 10; got != want {
		t.Errorf("Requests(\"\") = %d, want %d", got, want)
	}

	t.Run("clear", func(t *testing.T) {
		sim.Script(heaptest.Fault{Status: 503})
		if got := submit().code; got != 503 {
			t.Fatalf("got %d, want 503", got)
		}
		sim.ClearFaults()
		if got := submit().code; got != 201 {
			t.Fatalf("after ClearFaults: got %d, want 201", got)
		}
	})
}

func TestFaultLocationAndBody(t *testing.T) {
	sim := heaptest.New(heaptest.Options{})
	tok := token(t, sim, "sim-app", "sim-key")
	submit := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/api/public/v0/user_deletion", strings.NewReader(`{"users":[{"user_id":1}]}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		sim.ServeHTTP(w, r)
		return w
	}

	sim.Script(heaptest.Fault{Endpoint: "user_deletion", Status: 301, Location: "https://elsewhere.example/x", Count: 1})
	if w := submit(); w.Code != 301 || w.Header().Get("Location") != "https://elsewhere.example/x" {
		t.Errorf("redirect fault: got %d Location %q", w.Code, w.Header().Get("Location"))
	}
	sim.Script(heaptest.Fault{Endpoint: "user_deletion", Status: 201, Body: `{"status":"pending"}`, Count: 1})
	if w := submit(); w.Code != 201 || w.Body.String() != `{"status":"pending"}` {
		t.Errorf("2xx fault with a body: got %d %q", w.Code, w.Body.String())
	}
	if n := len(sim.Submissions()); n != 0 {
		t.Errorf("a fault answered by the script recorded %d submissions", n)
	}
	// Status 0 with Body: handled (accepted) as usual, only the answer's body replaced.
	sim.Script(heaptest.Fault{Endpoint: "user_deletion", Body: "<html>ok</html>", Count: 1})
	w := submit()
	if w.Code != 201 || w.Body.String() != "<html>ok</html>" || w.Header().Get("Content-Length") != "15" {
		t.Errorf("accepted with a replaced body: got %d %q (Content-Length %q)", w.Code, w.Body.String(), w.Header().Get("Content-Length"))
	}
	if n := len(sim.Submissions()); n != 1 {
		t.Errorf("%d submissions recorded, want 1: the users were accepted", n)
	}
	if w := submit(); w.Code != 201 || !strings.Contains(w.Body.String(), "deletion_request_id") {
		t.Errorf("after the script: got %d %q", w.Code, w.Body.String())
	}
}

func TestFaultRate(t *testing.T) {
	run := func(seed int64) []int {
		sim := heaptest.New(heaptest.Options{Seed: seed})
		sim.Script(heaptest.Fault{Endpoint: "auth_token", Status: 503, Rate: 0.25, Count: 400})
		var codes []int
		for range 500 {
			codes = append(codes, do(t, sim, "POST", "/api/public/v0/auth_token", "basic:sim-app:sim-key", "").code)
		}
		return codes
	}
	a, b := run(7), run(7)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("the same seed gave different faults")
	}
	hits := 0
	for i, c := range a {
		if c == 503 {
			hits++
			if i >= 400 {
				t.Fatalf("request %d faulted after the stage's Count", i)
			}
		}
	}
	if hits < 60 || hits > 140 { // 400 × 0.25 = 100 expected
		t.Errorf("%d of 400 requests hit at rate 0.25", hits)
	}
}

func TestServerDropAndLatency(t *testing.T) {
	srv := heaptest.NewServer(heaptest.Options{})
	t.Cleanup(srv.Close)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	post := func() (*http.Response, error) {
		req, _ := http.NewRequest("POST", srv.URL+"/api/public/v0/auth_token", nil)
		req.SetBasicAuth("sim-app", "sim-key")
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}

	srv.Script(heaptest.Fault{Drop: true, Count: 1})
	if _, err := post(); err == nil {
		t.Fatal("dropped request: no error")
	}
	if resp, err := post(); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the drop: %v %v", resp, err)
	}

	// A request held by latency ends when the server closes.
	srv.Script(heaptest.Fault{Latency: time.Hour})
	done := make(chan error, 1)
	go func() { _, err := post(); done <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Requests("auth_token") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the delayed request never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	srv.Close()
	srv.Close() // twice is fine
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the injected latency")
	}
}

func TestConcurrentUse(t *testing.T) {
	sim := heaptest.New(heaptest.Options{DiscardUsers: true})
	tok := token(t, sim, "sim-app", "sim-key")
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			for i := range 20 {
				rep := do(t, sim, "POST", "/api/public/v0/user_deletion", "bearer:"+tok, fmt.Sprintf(`{"users":[{"user_id":%d},{"identity":"u%d@example.com"}]}`, g*100+i, i))
				if rep.code != 201 {
					errs <- errors.New(rep.raw)
					return
				}
				id := rep.body["deletion_request_id"].(string)
				if rep := do(t, sim, "GET", "/api/public/v0/deletion_status/"+id, "bearer:"+tok, ""); rep.code != 200 {
					errs <- errors.New(rep.raw)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := sim.SubmittedUsers(); got != 32*20*2 {
		t.Errorf("SubmittedUsers() = %d, want %d", got, 32*20*2)
	}
	subs := sim.Submissions()
	if len(subs) != 32*20 || subs[0].Users != nil {
		t.Errorf("Submissions(): %d, users kept: %v", len(subs), subs[0].Users != nil)
	}
}

func BenchmarkUserDeletion(b *testing.B) {
	sim := heaptest.New(heaptest.Options{DiscardUsers: true})
	r := httptest.NewRequest("POST", "/api/public/v0/auth_token", nil)
	r.SetBasicAuth("sim-app", "sim-key")
	w := httptest.NewRecorder()
	sim.ServeHTTP(w, r)
	var tok struct {
		Token string `json:"access_token"`
	}
	json.Unmarshal(w.Body.Bytes(), &tok)
	var sb strings.Builder
	sb.WriteString(`{"users":[`)
	for i := range 10000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		if i%2 == 0 {
			fmt.Fprintf(&sb, `{"user_id":%d}`, 1<<60+i)
		} else {
			fmt.Fprintf(&sb, `{"identity":"user%d@example.com"}`, i)
		}
	}
	sb.WriteString(`]}`)
	body := sb.String()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r := httptest.NewRequest("POST", "/api/public/v0/user_deletion", strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok.Token)
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		sim.ServeHTTP(w, r)
		if w.Code != 201 {
			b.Fatal(w.Body.String())
		}
	}
}
