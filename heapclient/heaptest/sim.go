package heaptest

import (
	"bytes"
	crand "crypto/rand"
	"encoding/json"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Endpoint names, as used by [Sim.Requests] and [Fault].Endpoint.
const (
	EndpointAuthToken      = "auth_token"
	EndpointUserDeletion   = "user_deletion"
	EndpointDeletionStatus = "deletion_status"
)

const (
	pathAuth     = "/api/public/v0/auth_token"
	pathDeletion = "/api/public/v0/user_deletion"
	pathStatus   = "/api/public/v0/deletion_status/"

	maxUsers = 10000
	maxBody  = 32 << 20 // 10,000 identities of up to ~1 KiB each, JSON-escaped
)

// User is one user as the simulator received it: Identity, or UserID holding the
// exact decimal text of the JSON integer Heap received (so ids above 2^53 are
// compared exactly).
type User struct {
	Identity string
	UserID   string
}

// Outcome is what [Options].Rule decides for one user.
type Outcome int

const (
	// OutcomeComplete lets the user's deletion complete as usual.
	OutcomeComplete Outcome = iota
	// OutcomeHang keeps the whole deletion request containing the user pending
	// forever.
	OutcomeHang
	// OutcomeReject makes any user_deletion request containing the user answer
	// 400, with a message that echoes the user.
	OutcomeReject
)

// Options configure a [Sim]. The zero value is a working simulator.
type Options struct {
	AppID, APIKey string            // the app's credentials; defaults "sim-app", "sim-key"
	Apps          map[string]string // further apps, app id → API key; each has its own tokens and deletions
	TokenTTL      time.Duration     // a token answers 401 this long after it was issued; default 5m
	CompleteAfter time.Duration     // a deletion reads pending until this long after creation; 0 = complete at once
	NeverComplete bool              // every deletion stays pending
	Rule          func(User) Outcome
	DiscardUsers  bool             // keep counts, not the users themselves (benchmarks)
	Now           func() time.Time // default time.Now
	Seed          int64            // seeds Fault.Rate's random choices
}

// Submission is one accepted user_deletion request. Users is nil when
// [Options].DiscardUsers is set.
type Submission struct {
	ID    string
	Users []User
	At    time.Time
}

// Deletion is the state of one deletion request, as deletion_status would report
// it now.
type Deletion struct {
	ID        string
	Status    string // "pending" or "complete"
	Users     int
	CreatedAt time.Time
}

// Sim is a simulated Heap User Deletion API: an http.Handler. Create it with
// [New] or [NewServer].
type Sim struct {
	opts Options
	done chan struct{} // closed by Server.Close to end injected latency
	stop sync.Once

	mu          sync.Mutex
	apps        map[string]string // app id → API key
	tokens      map[string]token
	sweepAt     int
	deletions   map[string]deletion
	submissions []Submission
	users       int
	requests    map[string]int
	total       int
	stages      []*stage
	rng         *rand.Rand
}

type token struct {
	app    string
	issued time.Time
}

type deletion struct {
	app     string
	created time.Time
	users   int
	hang    bool
}

// New returns a simulator configured by opts, with defaults filled in.
func New(opts Options) *Sim {
	if opts.AppID == "" {
		opts.AppID = "sim-app"
	}
	if opts.APIKey == "" {
		opts.APIKey = "sim-key"
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	apps := make(map[string]string, len(opts.Apps)+1)
	for id, key := range opts.Apps {
		apps[id] = key
	}
	apps[opts.AppID] = opts.APIKey
	return &Sim{
		opts:      opts,
		apps:      apps,
		done:      make(chan struct{}),
		tokens:    make(map[string]token),
		sweepAt:   1024,
		deletions: make(map[string]deletion),
		requests:  make(map[string]int, 3),
		rng:       rand.New(rand.NewPCG(uint64(opts.Seed), 0x9e3779b97f4a7c15)),
	}
}

// ServeHTTP answers Heap's three endpoints, after applying the current fault
// stage, if any.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep, id := route(r.URL.Path)
	if f, ok := s.begin(ep); ok {
		if f.Latency > 0 {
			// Read the body first: only then does net/http notice a client that
			// gives up, and end r.Context().
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			if err != nil {
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if !s.sleep(r, f.Latency) {
				return
			}
		}
		if f.Drop {
			// Closes the connection without an answer, silently.
			panic(http.ErrAbortHandler)
		}
		if f.Status != 0 {
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			if f.Location != "" {
				w.Header().Set("Location", f.Location)
			}
			if f.Body != "" {
				writeJSON(w, f.Status, f.Body)
			} else {
				writeError(w, f.Status, http.StatusText(f.Status))
			}
			return
		}
		if f.Body != "" {
			w = &bodyReplacer{ResponseWriter: w, body: f.Body}
		}
	}
	switch ep {
	case EndpointAuthToken:
		s.serveAuth(w, r)
	case EndpointUserDeletion:
		s.serveDeletion(w, r)
	case EndpointDeletionStatus:
		s.serveStatus(w, r, id)
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
}

// bodyReplacer answers with the status and headers the handler chose, but with
// body instead of the handler's own.
type bodyReplacer struct {
	http.ResponseWriter
	body  string
	wrote bool
}

func (b *bodyReplacer) WriteHeader(code int) {
	if b.wrote {
		return
	}
	b.wrote = true
	b.Header().Set("Content-Length", strconv.Itoa(len(b.body)))
	b.ResponseWriter.WriteHeader(code)
	io.WriteString(b.ResponseWriter, b.body)
}

func (b *bodyReplacer) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return len(p), nil // the handler's body is dropped
}

func route(path string) (endpoint, id string) {
	switch {
	case path == pathAuth:
		return EndpointAuthToken, ""
	case path == pathDeletion:
		return EndpointUserDeletion, ""
	case strings.HasPrefix(path, pathStatus):
		return EndpointDeletionStatus, path[len(pathStatus):]
	}
	return "", ""
}

// sleep waits d, and reports false if the request or the server ended first.
func (s *Sim) sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-s.done:
	}
	return false
}

func (s *Sim) serveAuth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	app, key, ok := r.BasicAuth()
	s.mu.Lock()
	want, known := s.apps[app]
	s.mu.Unlock()
	if !ok || !known || key != want {
		writeError(w, http.StatusUnauthorized, "Unauthorized: invalid app_id or api_key")
		return
	}
	tok := crand.Text()
	now := s.opts.Now()
	s.mu.Lock()
	if len(s.tokens) >= s.sweepAt {
		for t, info := range s.tokens {
			if now.Sub(info.issued) >= s.opts.TokenTTL {
				delete(s.tokens, t)
			}
		}
		s.sweepAt = max(1024, 2*len(s.tokens))
	}
	s.tokens[tok] = token{app: app, issued: now}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, `{"access_token":"`+tok+`"}`)
}

// bearer returns the app of the request's valid bearer token.
func (s *Sim) bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	now := s.opts.Now()
	s.mu.Lock()
	t, ok := s.tokens[h[len(scheme):]]
	s.mu.Unlock()
	if !ok || now.Sub(t.issued) >= s.opts.TokenTTL {
		return "", false
	}
	return t.app, true
}

type wireUser struct {
	Identity *string         `json:"identity"`
	UserID   json.RawMessage `json:"user_id"`
}

func (s *Sim) serveDeletion(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	app, ok := s.bearer(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusBadRequest, "Content-Type must be application/json")
		return
	}
	var body struct {
		Users []wireUser `json:"users"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body")
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "invalid JSON body: trailing data")
		return
	}
	switch n := len(body.Users); {
	case n == 0:
		writeError(w, http.StatusBadRequest, "users must not be empty")
		return
	case n > maxUsers:
		writeError(w, http.StatusBadRequest, "at most 10000 users per request")
		return
	}
	var users []User
	keep := !s.opts.DiscardUsers
	if keep {
		users = make([]User, len(body.Users))
	}
	hang := false
	for i, wu := range body.Users {
		var u User
		switch {
		case wu.Identity != nil && wu.UserID != nil, wu.Identity == nil && wu.UserID == nil:
			writeError(w, http.StatusBadRequest, "users["+strconv.Itoa(i)+"]: exactly one of identity and user_id is required")
			return
		case wu.Identity != nil:
			if *wu.Identity == "" {
				writeError(w, http.StatusBadRequest, "users["+strconv.Itoa(i)+"]: identity must not be empty")
				return
			}
			u.Identity = *wu.Identity
		default:
			if !isUint(wu.UserID) {
				writeError(w, http.StatusBadRequest, "users["+strconv.Itoa(i)+"]: user_id must be an integer")
				return
			}
			u.UserID = string(wu.UserID)
		}
		if s.opts.Rule != nil {
			switch s.opts.Rule(u) {
			case OutcomeReject:
				who := u.Identity
				if who == "" {
					who = u.UserID
				}
				// Echoes the user on purpose: clients must redact such messages.
				writeError(w, http.StatusBadRequest, "user "+who+" cannot be deleted")
				return
			case OutcomeHang:
				hang = true
			}
		}
		if keep {
			users[i] = u
		}
	}
	id := uuid.NewString()
	now := s.opts.Now()
	s.mu.Lock()
	s.deletions[id] = deletion{app: app, created: now, users: len(body.Users), hang: hang}
	s.submissions = append(s.submissions, Submission{ID: id, Users: users, At: now})
	s.users += len(body.Users)
	s.mu.Unlock()

	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	writeJSON(w, http.StatusCreated, `{"deletion_request_location":"`+scheme+"://"+jsonSafe(r.Host)+pathStatus+id+
		`","deletion_request_id":"`+id+`","status":"pending"}`)
}

func (s *Sim) serveStatus(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	app, ok := s.bearer(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	now := s.opts.Now()
	s.mu.Lock()
	d, ok := s.deletions[id]
	s.mu.Unlock()
	if !ok || d.app != app {
		writeError(w, http.StatusNotFound, "deletion request not found")
		return
	}
	writeJSON(w, http.StatusOK, `{"deletion_request_id":"`+id+`","status":"`+s.status(d, now)+`"}`)
}

// status computes a deletion's status lazily from its creation time.
func (s *Sim) status(d deletion, now time.Time) string {
	if d.hang || s.opts.NeverComplete || now.Sub(d.created) < s.opts.CompleteAfter {
		return "pending"
	}
	return "complete"
}

// isUint reports whether a raw JSON value is a non-negative integer literal.
func isUint(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// jsonSafe drops the characters that would need escaping in a JSON string; a
// Host header never legitimately holds them.
func jsonSafe(s string) string {
	if !strings.ContainsAny(s, "\"\\") && strings.IndexFunc(s, func(r rune) bool { return r < 0x20 }) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 {
			return -1
		}
		return r
	}, s)
}

func writeJSON(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	b, err := json.Marshal(struct {
		Err struct {
			Message string `json:"message"`
		} `json:"err"`
	}{Err: struct {
		Message string `json:"message"`
	}{Message: msg}})
	if err != nil { // cannot happen for a string
		b = []byte(`{"err":{"message":"error"}}`)
	}
	writeJSON(w, code, string(b))
}

// Submissions returns the accepted user_deletion requests, oldest first.
func (s *Sim) Submissions() []Submission {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Submission, len(s.submissions))
	copy(out, s.submissions)
	return out
}

// Requests returns how many requests reached endpoint ("auth_token",
// "user_deletion", "deletion_status"), whether answered, faulted or dropped; ""
// counts every request, unknown paths included.
func (s *Sim) Requests(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if endpoint == "" {
		return s.total
	}
	return s.requests[endpoint]
}

// Deletion returns the deletion request id as deletion_status would report it
// now, and false if there is no such deletion request.
func (s *Sim) Deletion(id string) (Deletion, bool) {
	now := s.opts.Now()
	s.mu.Lock()
	d, ok := s.deletions[id]
	s.mu.Unlock()
	if !ok {
		return Deletion{}, false
	}
	return Deletion{ID: id, Status: s.status(d, now), Users: d.users, CreatedAt: d.created}, true
}

// SubmittedUsers returns the number of users in all accepted user_deletion
// requests.
func (s *Sim) SubmittedUsers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users
}

// SetAPIKey gives app appID the API key key, as rotating the key in Heap does:
// auth_token refuses the old key with 401 from now on. Tokens issued before stay
// valid until they expire (Heap documents nothing here; call [Sim.ExpireTokens]
// for the other case). An unknown appID becomes a further app.
func (s *Sim) SetAPIKey(appID, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[appID] = key
}

// ExpireTokens makes every token issued so far answer 401, as if its lifetime had
// passed.
func (s *Sim) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// close ends all injected latency at once, so that a server can shut down.
func (s *Sim) close() {
	s.stop.Do(func() { close(s.done) })
}

// Preload creates n deletion requests of the main app, of users users each, as if
// they had been submitted now, without HTTP, and returns their ids. Benchmarks use
// it to give heapdel many pending requests to follow; they stay pending as
// [Options].CompleteAfter and NeverComplete say. Submissions does not list them.
func (s *Sim) Preload(n, users int) []string {
	now := s.opts.Now()
	ids := make([]string, n)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ids {
		ids[i] = uuid.NewString()
		s.deletions[ids[i]] = deletion{app: s.opts.AppID, created: now, users: users}
	}
	s.users += n * users
	return ids
}
