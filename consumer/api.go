package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// The request-reply API is a NATS micro service (github.com/nats-io/nats.go/micro)
// named "heapdel", registered by every replica, so that `nats micro ls|info|stats
// heapdel` find it. Its endpoints are under <prefix>.api. and share the default
// queue group: each request is answered by one replica. Errors carry the micro
// headers Nats-Service-Error-Code (400, 404, 500) and Nats-Service-Error,
// and the same as a JSON body {"code": …, "error": "…"}. No reply holds an
// identity or its hash.

// APIServiceName is the micro service's name.
const APIServiceName = "heapdel"

// The API's endpoints, under [APISubject].
const (
	EndpointStatus  = "status"  // one job: StatusRequest → PublicJob
	EndpointJobs    = "jobs"    // a page of jobs: JobsRequest → JobsReply
	EndpointReport  = "report"  // a page of the audit report: ReportRequest → CSV or JSON Lines
	EndpointRedrive = "redrive" // redrive failed jobs: RedriveRequest → RedriveReply
)

// Page sizes of the jobs and report endpoints. A reply is also cut short to fit
// the server's max_payload; its next cursor then says where to go on.
const (
	DefaultPageLimit = 1000
	MaxPageLimit     = 10000
)

// ReportNextHeader is the header of a report reply that holds the After of the
// next page; it is absent on the last page.
const ReportNextHeader = "Heapdel-Next"

// requestTimeout bounds one request's work: a page reads the whole job store.
const requestTimeout = 30 * time.Second

// APISubject returns the subject of an endpoint of the API for a subject prefix:
// "heap.deletion.api.status" for the defaults.
func APISubject(prefix, endpoint string) string { return prefix + ".api." + endpoint }

// StatusRequest asks the status endpoint for one request id's job.
type StatusRequest struct {
	RequestID string `json:"request_id"`
}

// APIError is the JSON body of an error reply; the same code and text are in the
// micro error headers.
type APIError struct {
	Code  int    `json:"code"`
	Error string `json:"error"`
}

// API returns the request-reply micro service that Start registered (with
// [Config].Version as its version), for its stats and info; nil when it did not
// start (NATS refused the subscriptions: Start logs why) or before Start.
func (s *Service) API() micro.Service { return s.api }

func (s *Service) startAPI(version string) (micro.Service, error) {
	if s.jobs == nil {
		return nil, errors.New("api: the job store is not bound: start the service first")
	}
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        APIServiceName,
		Version:     serviceVersion(version),
		Description: "heapdel: Heap user deletions; job status, job listings and audit reports",
		Metadata:    map[string]string{"build_version": version, "prefix": s.cfg.Prefix, "job_bucket": s.cfg.JobBucket},
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			s.log.Error().Str("subject", e.Subject).Str("error", e.Description).Msg("api: NATS reported an error on the request-reply API (a refused subscription needs docs/nats-permissions.md's API permissions)")
		},
	})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	g := svc.AddGroup(s.cfg.Prefix + ".api")
	for _, ep := range []struct {
		name, about string
		h           micro.HandlerFunc
	}{
		{EndpointStatus, `one job by request id: {"request_id": "…"}`, s.apiStatus},
		{EndpointJobs, "a page of jobs sorted by request id, filtered (status, reason, older_than, breached, due_within, prefix, since, until) after a cursor", s.apiJobs},
		{EndpointReport, "a page of the audit report of terminal jobs (csv or jsonl); the next page's cursor is in the " + ReportNextHeader + " header", s.apiReport},
		{EndpointRedrive, "redrive failed jobs (reason, since, until, request_ids; a dry run unless yes is true)", s.apiRedrive},
	} {
		if err := g.AddEndpoint(ep.name, ep.h, micro.WithEndpointMetadata(map[string]string{"description": ep.about})); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("api: endpoint %s: %w", ep.name, err)
		}
	}
	// Once the server has the subscriptions, a request from any connection finds them.
	if err := s.nc.FlushTimeout(5 * time.Second); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("api: %w", err)
	}
	s.log.Info().Str("service", APIServiceName).Str("subjects", s.cfg.Prefix+".api.>").Msg("request-reply API registered")
	return svc, nil
}

// semverRE is the Semantic Versioning 2.0 grammar that micro requires of a version.
var semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// serviceVersion turns a build version ("v1.2.3", "(devel)") into the semantic
// version micro requires; one that is not becomes 0.0.0-devel (the build version
// stays in the metadata).
func serviceVersion(v string) string {
	if v = strings.TrimPrefix(v, "v"); semverRE.MatchString(v) {
		return v
	}
	return "0.0.0-devel"
}

// apiContext bounds one request, and ends with the service.
func (s *Service) apiContext() (context.Context, context.CancelFunc) {
	base := s.runCtx
	if base == nil {
		base = context.Background()
	}
	return context.WithTimeout(base, requestTimeout)
}

// apiError answers req with a micro error.
func (s *Service) apiError(req micro.Request, code int, msg string) {
	body, _ := json.Marshal(APIError{Code: code, Error: msg})
	if code >= 500 {
		s.log.Warn().Str("subject", req.Subject()).Int("code", code).Str("error", msg).Msg("api: request failed")
	}
	_ = req.Error(fmt.Sprint(code), msg, body)
}

func (s *Service) apiStatus(req micro.Request) {
	var r StatusRequest
	if err := json.Unmarshal(req.Data(), &r); err != nil || !validRequestID(r.RequestID) {
		s.apiError(req, 400, `the request must be {"request_id": "<1-128 characters of A-Z a-z 0-9 . _ : ->"}`)
		return
	}
	ctx, cancel := s.apiContext()
	defer cancel()
	job, _, found, err := s.getJob(ctx, r.RequestID)
	switch {
	case err != nil:
		s.apiError(req, 500, err.Error())
	case !found:
		s.apiError(req, 404, fmt.Sprintf("no job for request id %q: not taken yet, never received, invalid without a readable request id, or expired after the job retention", r.RequestID))
	default:
		_ = req.RespondJSON(Public(job))
	}
}

// pageLimit checks a requested page size: 0 is the default.
func pageLimit(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultPageLimit, nil
	case n < 0 || n > MaxPageLimit:
		return 0, fmt.Errorf("limit %d is outside 1-%d", n, MaxPageLimit)
	}
	return n, nil
}

// maxReply is the most a reply body may hold: the server's max_payload, less room
// for headers.
func (s *Service) maxReply() int {
	return max(int(s.nc.MaxPayload())-4096, 4096)
}

func (s *Service) apiJobs(req micro.Request) {
	var r JobsRequest
	if len(bytes.TrimSpace(req.Data())) > 0 {
		if err := json.Unmarshal(req.Data(), &r); err != nil {
			s.apiError(req, 400, "the request must be a JSON object of filters: "+err.Error())
			return
		}
	}
	f, err := r.Filter(s.now())
	if err == nil {
		r.Limit, err = pageLimit(r.Limit)
	}
	if err != nil {
		s.apiError(req, 400, err.Error())
		return
	}
	ctx, cancel := s.apiContext()
	defer cancel()
	jobs, next, err := JobPage(ctx, s.jobs, f, r.Limit)
	if err != nil {
		s.apiError(req, 500, err.Error())
		return
	}
	// The array is written by hand so that a page too large for one message is
	// cut after the last job that fits.
	var body bytes.Buffer
	body.WriteString(`{"jobs":[`)
	limit := s.maxReply() - 200 // the next cursor and the closing
	for i, j := range jobs {
		b, err := json.Marshal(Public(j))
		if err != nil {
			s.apiError(req, 500, "encode job: "+err.Error())
			return
		}
		if body.Len()+len(b)+1 > limit {
			if i == 0 {
				s.apiError(req, 500, "a job record is larger than the server's max_payload")
				return
			}
			next = jobs[i-1].RequestID
			break
		}
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(b)
	}
	body.WriteString(`]`)
	if next != "" {
		n, _ := json.Marshal(next)
		body.WriteString(`,"next":`)
		body.Write(n)
	}
	body.WriteString(`}`)
	_ = req.Respond(body.Bytes())
}

func (s *Service) apiReport(req micro.Request) {
	var r ReportRequest
	if len(bytes.TrimSpace(req.Data())) > 0 {
		if err := json.Unmarshal(req.Data(), &r); err != nil {
			s.apiError(req, 400, "the request must be a JSON object {format, since, until, after, limit}: "+err.Error())
			return
		}
	}
	limit, err := pageLimit(r.Limit)
	if err != nil {
		s.apiError(req, 400, err.Error())
		return
	}
	var body bytes.Buffer
	w, err := NewReportWriter(&body, r.Format)
	if err != nil {
		s.apiError(req, 400, err.Error())
		return
	}
	ctx, cancel := s.apiContext()
	defer cancel()
	f := JobFilter{Status: TerminalStates(), Since: r.Since, Until: r.Until, After: r.After, Now: s.now()}
	jobs, next, err := JobPage(ctx, s.jobs, f, limit)
	if err != nil {
		s.apiError(req, 500, err.Error())
		return
	}
	room := s.maxReply()
	for i, j := range jobs {
		n := body.Len()
		_ = w.Write(j) // a bytes.Buffer takes every write
		_ = w.Flush()
		if body.Len() > room {
			if i == 0 {
				s.apiError(req, 500, "a report row is larger than the server's max_payload")
				return
			}
			body.Truncate(n)
			next = jobs[i-1].RequestID
			break
		}
	}
	if err := w.Flush(); err != nil {
		s.apiError(req, 500, err.Error())
		return
	}
	var opts []micro.RespondOpt
	if next != "" {
		opts = append(opts, micro.WithHeaders(micro.Headers{ReportNextHeader: {next}}))
	}
	_ = req.Respond(body.Bytes(), opts...)
}

func (s *Service) apiRedrive(req micro.Request) {
	var r RedriveRequest
	if len(bytes.TrimSpace(req.Data())) > 0 {
		if err := json.Unmarshal(req.Data(), &r); err != nil {
			s.apiError(req, 400, "the request must be a JSON object {reason, since, until, request_ids, yes, after, limit}: "+err.Error())
			return
		}
	}
	if err := r.Check(); err != nil {
		s.apiError(req, 400, err.Error())
		return
	}
	ctx, cancel := s.apiContext()
	defer cancel()
	reply, err := s.Redriver().Redrive(ctx, r)
	if err != nil {
		// Commands published before the error stay published: say which.
		s.apiError(req, 500, fmt.Sprintf("%v (redriven before it: %d)", err, reply.Redriven))
		return
	}
	if reply.Redriven > 0 && r.Yes {
		s.log.Info().Int("redriven", reply.Redriven).Int("refused", reply.Refused).Msg("api: failed jobs redriven")
	}
	_ = req.RespondJSON(reply)
}

// Redriver returns a redriver of this service's jobs, with its sealing key.
func (s *Service) Redriver() *Redriver {
	return &Redriver{JS: s.js, Jobs: s.jobs, Prefix: s.cfg.Prefix, Sealer: s.sealer, Now: s.now}
}

// validRequestID reports whether id is 1-128 characters of [A-Za-z0-9._:-], the
// request-id alphabet of SPEC.md.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
