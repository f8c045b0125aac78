package heaptest

import "time"

// Fault is one scripted stage of misbehaviour. While it is the current stage, it
// applies to the requests that match Endpoint: it waits Latency, then drops the
// connection (Drop), or answers Status with an {"err":{"message":...}} body (or
// Body) and the Retry-After and Location headers if set, or, with Status 0,
// answers normally (with Body instead of the real body if set). Drop panics
// with http.ErrAbortHandler, which net/http servers turn into a closed
// connection; call ServeHTTP directly only with stages that do not drop.
//
// None of these is documented Heap behaviour: they stand for what a proxy, a
// wrong base URL or an unexpected change at Heap could send (a 301 or 407, a
// 2xx whose body lacks the documented fields), so that clients can prove they
// never take such an answer for a verdict on the users.
type Fault struct {
	Endpoint   string        // "auth_token", "user_deletion", "deletion_status"; "" = every endpoint
	Status     int           // e.g. 429, 503, 301, 407; 0 = answer normally (latency, Body only)
	RetryAfter string        // Retry-After header value if non-empty
	Location   string        // Location header value if non-empty, e.g. with Status 301
	Latency    time.Duration // added before answering
	Drop       bool          // close the connection without answering
	Count      int           // this stage ends after Count matching requests (0 = no count limit)
	For        time.Duration // this stage ends this long after it starts (0 = no time limit)
	Rate       float64       // fraction of matching requests hit (0 = all), drawn from Options.Seed
	// Body, if non-empty, is the answer's body (Content-Type application/json),
	// sent as is. With Status 0 the request is still handled normally (a
	// user_deletion is accepted and recorded, as Submissions shows) and only its
	// answer's body is replaced: Heap accepted the users but the client cannot
	// read the deletion request id.
	Body string
}

// stage is a Fault in the script, with its progress.
type stage struct {
	Fault
	started time.Time // when it became the current stage
	seen    int       // matching requests while current
}

// Script appends stages to the fault script. Stages apply one after another: a
// stage becomes current when the one before it ends (the first one at once if the
// script was empty), and ends after Count matching requests or For after it
// became current, whichever comes first. A stage with neither lasts until
// [Sim.ClearFaults]. Count counts every matching request, hit by Rate or not.
func (s *Sim) Script(stages ...Fault) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range stages {
		st := &stage{Fault: f}
		if len(s.stages) == 0 {
			st.started = now
		}
		s.stages = append(s.stages, st)
	}
}

// ClearFaults drops every stage of the fault script: requests are answered
// normally from now on.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stages = nil
}

// begin counts a request to endpoint and returns the fault to apply to it, if
// any, advancing the script.
func (s *Sim) begin(endpoint string) (Fault, bool) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total++
	if endpoint != "" {
		s.requests[endpoint]++
	}
	for len(s.stages) > 0 {
		st := s.stages[0]
		if st.For <= 0 || now.Before(st.started.Add(st.For)) {
			break
		}
		s.advance(st.started.Add(st.For))
	}
	if len(s.stages) == 0 {
		return Fault{}, false
	}
	st := s.stages[0]
	if st.Endpoint != "" && st.Endpoint != endpoint {
		return Fault{}, false
	}
	st.seen++
	hit := st.Rate <= 0 || st.Rate >= 1 || s.rng.Float64() < st.Rate
	if st.Count > 0 && st.seen >= st.Count {
		s.advance(now)
	}
	return st.Fault, hit
}

// advance ends the current stage; the next one starts at t.
func (s *Sim) advance(t time.Time) {
	s.stages[0] = nil
	s.stages = s.stages[1:]
	if len(s.stages) > 0 {
		s.stages[0].started = t
	}
}
