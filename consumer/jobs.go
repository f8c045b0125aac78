package consumer

import (
	"container/heap"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The job states, as a [JobFilter] names them and a [Job]'s Status holds them.
const (
	JobAccepted   = stateAccepted
	JobProcessing = stateProcessing
	JobComplete   = stateComplete
	JobFailed     = stateFailed
	JobHeld       = stateHeld
)

// JobStates returns every state a job can be in.
func JobStates() []string {
	return []string{JobAccepted, JobProcessing, JobComplete, JobFailed, JobHeld}
}

// ErrStop, returned by the function given to [ListJobs], ends the listing early;
// ListJobs then returns nil.
var ErrStop = errors.New("stop listing")

// JobFilter chooses jobs. Zero fields do not filter; set fields must all hold.
type JobFilter struct {
	// Status keeps jobs in any of these states (see [JobStates]); JobComplete and JobFailed are
	// the terminal ones.
	Status []string
	// Reason keeps jobs whose reason (the failure reason, or a held job's note) is this.
	Reason string
	// OlderThan keeps jobs requested more than this long before Now.
	OlderThan time.Duration
	// Breached keeps jobs with a deadline that was not met: not complete at their
	// deadline (now past), or completed after it.
	Breached bool
	// DueWithin keeps jobs not complete whose deadline is after Now and at most
	// this long after it.
	DueWithin time.Duration
	// Prefix keeps request ids that start with it.
	Prefix string
	// After keeps request ids that sort after it: the cursor of [JobPage].
	After string
	// Since and Until keep jobs completed (or failed) in [Since, Until); a job with
	// no completion time is then left out.
	Since, Until time.Time
	// Now is the time the age and deadline filters count from; zero is time.Now().
	Now time.Time
}

// Match reports whether j passes every filter of f. f.Now must be set.
func (f JobFilter) Match(j Job) bool {
	switch {
	case len(f.Status) > 0 && !contains(f.Status, j.Status),
		f.Reason != "" && j.Reason != f.Reason,
		f.Prefix != "" && !strings.HasPrefix(j.RequestID, f.Prefix),
		f.After != "" && j.RequestID <= f.After,
		f.OlderThan > 0 && !j.RequestedAt.Before(f.Now.Add(-f.OlderThan)),
		f.Breached && !DeadlineBreached(j, f.Now),
		f.DueWithin > 0 && (j.Deadline.IsZero() || j.Status == stateComplete ||
			!j.Deadline.After(f.Now) || j.Deadline.After(f.Now.Add(f.DueWithin))),
		!f.Since.IsZero() && (j.CompletedAt.IsZero() || j.CompletedAt.Before(f.Since)),
		!f.Until.IsZero() && (j.CompletedAt.IsZero() || !j.CompletedAt.Before(f.Until)):
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// DeadlineMet reports whether a job with a deadline completed at or before it. It
// returns false for a job without a deadline: see [Job.Deadline].
func DeadlineMet(j Job) bool {
	return !j.Deadline.IsZero() && j.Status == stateComplete && !j.CompletedAt.After(j.Deadline)
}

// DeadlineBreached reports whether a job's deadline was missed as of now: it
// completed after it, or it is not complete and the deadline has passed.
func DeadlineBreached(j Job, now time.Time) bool {
	switch {
	case j.Deadline.IsZero(), DeadlineMet(j):
		return false
	case j.Status == stateComplete:
		return true
	default:
		return now.After(j.Deadline)
	}
}

// ListJobs calls fn with every job of the job store kv that f chooses, in the
// store's order (that of their last change), not sorted. It holds one job at a
// time, so it reads any number of jobs in flat memory; a job changed while it
// reads is seen once, in one of its states. Records that do not decode are
// skipped. It returns fn's error (nil for [ErrStop]), or an error when the store
// cannot be read.
func ListJobs(ctx context.Context, kv jetstream.KeyValue, f JobFilter, fn func(Job) error) error {
	if f.Now.IsZero() {
		f.Now = time.Now()
	}
	// A request id's key starts with its prefix's key (JobKey escapes byte by
	// byte), so most jobs outside the prefix are skipped without decoding them.
	keyPrefix := JobKey(f.Prefix)
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read jobs: %w", err)
	}
	defer stopWatch(w)
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read jobs: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("read jobs: the job store's watch closed")
			}
			if e == nil { // every job as of the start has been delivered
				return nil
			}
			if !strings.HasPrefix(e.Key(), keyPrefix) {
				continue
			}
			var j Job
			if json.Unmarshal(e.Value(), &j) != nil || !f.Match(j) {
				continue
			}
			if err := fn(j); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
		}
	}
}

// JobPage returns the first limit jobs that f chooses, sorted by request id, and
// next, the cursor of the following page (f.After for it), or "" when this is
// the last page. It reads the whole store once per page and holds at most
// limit+1 jobs. A limit below 1 is 1. It returns an error when the store cannot
// be read.
func JobPage(ctx context.Context, kv jetstream.KeyValue, f JobFilter, limit int) (jobs []Job, next string, err error) {
	limit = max(limit, 1)
	h := &jobMaxHeap{}
	err = ListJobs(ctx, kv, f, func(j Job) error {
		switch {
		case h.Len() <= limit:
			heap.Push(h, j)
		case j.RequestID < (*h)[0].RequestID:
			(*h)[0] = j
			heap.Fix(h, 0)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	more := h.Len() > limit
	if more {
		heap.Pop(h) // the first of the next page: it only told that there is one
	}
	jobs = make([]Job, h.Len())
	for i := len(jobs) - 1; i >= 0; i-- {
		jobs[i] = heap.Pop(h).(Job)
	}
	if more {
		next = jobs[len(jobs)-1].RequestID
	}
	return jobs, next, nil
}

// jobMaxHeap keeps the jobs with the smallest request ids seen so far, the
// largest on top, so that it is the one replaced.
type jobMaxHeap []Job

func (h jobMaxHeap) Len() int           { return len(h) }
func (h jobMaxHeap) Less(i, k int) bool { return h[i].RequestID > h[k].RequestID }
func (h jobMaxHeap) Swap(i, k int)      { h[i], h[k] = h[k], h[i] }
func (h *jobMaxHeap) Push(x any)        { *h = append(*h, x.(Job)) }
func (h *jobMaxHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	*h = old[:len(old)-1]
	return j
}

// PublicJob is a job as heapdel shows it outside the job store (the API, `heapdel
// jobs --json`, reports): the whole record except the identity hash, which stays
// in the store for an auditor holding the hash key, and the sealed user. Its JSON
// has no identity_hash and no sealed field.
type PublicJob struct {
	Job
	// IdentityHash and Sealed hide the record's own in JSON: the shallower field wins.
	IdentityHash *struct{} `json:"identity_hash,omitempty"`
	Sealed       *struct{} `json:"sealed,omitempty"`
}

// Public returns j without its identity hash and sealed user.
func Public(j Job) PublicJob {
	j.IdentityHash, j.Sealed = "", ""
	return PublicJob{Job: j}
}

// JobsRequest is a listing asked for by the API's jobs endpoint and by `heapdel
// jobs`: the filters of [JobFilter] in JSON, durations as Go durations or whole
// days ("36h", "7d"), times in RFC 3339.
type JobsRequest struct {
	Status    []string  `json:"status,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	OlderThan string    `json:"older_than,omitempty"`
	Breached  bool      `json:"breached,omitempty"`
	DueWithin string    `json:"due_within,omitempty"`
	Prefix    string    `json:"prefix,omitempty"`
	After     string    `json:"after,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	Until     time.Time `json:"until,omitzero"`
	// Limit is the page size; 0 takes the endpoint's default.
	Limit int `json:"limit,omitempty"`
}

// JobsReply is the API's answer to a [JobsRequest]: one page of jobs sorted by
// request id and Next, the After of the following page ("" on the last one).
type JobsReply struct {
	Jobs []PublicJob `json:"jobs"`
	Next string      `json:"next,omitempty"`
}

// Filter turns r into a JobFilter counting from now. It returns an error naming
// the field that does not parse.
func (r JobsRequest) Filter(now time.Time) (JobFilter, error) {
	f := JobFilter{Status: r.Status, Reason: r.Reason, Breached: r.Breached, Prefix: r.Prefix,
		After: r.After, Since: r.Since, Until: r.Until, Now: now}
	for _, s := range r.Status {
		if !contains(JobStates(), s) {
			return f, fmt.Errorf("status %q is not one of %s", s, strings.Join(JobStates(), ", "))
		}
	}
	var err error
	if f.OlderThan, err = ParseAge(r.OlderThan); err != nil {
		return f, fmt.Errorf("older_than: %w", err)
	}
	if f.DueWithin, err = ParseAge(r.DueWithin); err != nil {
		return f, fmt.Errorf("due_within: %w", err)
	}
	if r.Limit < 0 {
		return f, errors.New("limit must not be negative")
	}
	return f, nil
}

// ParseAge parses a Go duration ("36h", "90m") or a whole number of days ("7d").
// The empty string is 0. It returns an error for anything else, or a negative age.
func ParseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a duration (36h, 90m) nor a number of days (7d)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (36h, 90m) nor a number of days (7d)", s)
	}
	return d, nil
}

// ReportRequest asks the API's report endpoint for one page of the audit report
// of terminal jobs completed in [Since, Until).
type ReportRequest struct {
	Format string    `json:"format,omitempty"` // "csv" (default) or "jsonl"
	Since  time.Time `json:"since,omitzero"`
	Until  time.Time `json:"until,omitzero"`
	After  string    `json:"after,omitempty"`
	Limit  int       `json:"limit,omitempty"`
}

// ReportColumns are the audit report's columns, in order: the CSV header and the
// JSON Lines keys.
func ReportColumns() []string {
	return []string{"request_id", "status", "reason", "heap_deletion_request_id", "requested_at",
		"submitted_at", "completed_at", "deadline", "deadline_met", "attempt"}
}

// ReportWriter writes audit report rows, one per job, as CSV (with a header row)
// or JSON Lines. Times are RFC 3339 in UTC, empty (null in JSON) when unset;
// deadline_met is empty (null) for a job without a deadline. It never writes an
// identity or its hash.
type ReportWriter struct {
	csv  *csv.Writer
	json *json.Encoder
	rows int
}

// NewReportWriter returns a writer of the report in format "csv" or "jsonl" to w;
// the CSV header is written at once. It returns an error for another format.
func NewReportWriter(w io.Writer, format string) (*ReportWriter, error) {
	r := &ReportWriter{}
	switch format {
	case "", "csv":
		r.csv = csv.NewWriter(w)
		if err := r.csv.Write(ReportColumns()); err != nil {
			return nil, err
		}
	case "jsonl":
		r.json = json.NewEncoder(w)
		r.json.SetEscapeHTML(false)
	default:
		return nil, fmt.Errorf("report format %q is neither csv nor jsonl", format)
	}
	return r, nil
}

// reportRow is one JSON Lines row.
type reportRow struct {
	RequestID             string  `json:"request_id"`
	Status                string  `json:"status"`
	Reason                string  `json:"reason"`
	HeapDeletionRequestID string  `json:"heap_deletion_request_id"`
	RequestedAt           *string `json:"requested_at"`
	SubmittedAt           *string `json:"submitted_at"`
	CompletedAt           *string `json:"completed_at"`
	Deadline              *string `json:"deadline"`
	DeadlineMet           *bool   `json:"deadline_met"`
	Attempt               int     `json:"attempt"`
}

// Write writes j's row; CSV is flushed every 256 rows, so output streams. It
// returns the underlying writer's error.
func (r *ReportWriter) Write(j Job) error {
	ts := func(t time.Time) *string {
		if t.IsZero() {
			return nil
		}
		s := t.UTC().Format(time.RFC3339)
		return &s
	}
	var met *bool
	if !j.Deadline.IsZero() {
		m := DeadlineMet(j)
		met = &m
	}
	if r.json != nil {
		return r.json.Encode(reportRow{j.RequestID, j.Status, j.Reason, j.HeapDeletionRequestID,
			ts(j.RequestedAt), ts(j.SubmittedAt), ts(j.CompletedAt), ts(j.Deadline), met, j.Attempt})
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	metS := ""
	if met != nil {
		metS = strconv.FormatBool(*met)
	}
	if err := r.csv.Write([]string{j.RequestID, j.Status, j.Reason, j.HeapDeletionRequestID,
		str(ts(j.RequestedAt)), str(ts(j.SubmittedAt)), str(ts(j.CompletedAt)), str(ts(j.Deadline)),
		metS, strconv.Itoa(j.Attempt)}); err != nil {
		return err
	}
	if r.rows++; r.rows%256 == 0 {
		r.csv.Flush()
		return r.csv.Error()
	}
	return nil
}

// Flush writes what is buffered. It returns the underlying writer's error.
func (r *ReportWriter) Flush() error {
	if r.csv == nil {
		return nil
	}
	r.csv.Flush()
	return r.csv.Error()
}

// TerminalStates returns the states a report covers: complete and failed.
func TerminalStates() []string { return []string{JobComplete, JobFailed} }
