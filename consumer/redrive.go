package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
)

// Redrive runs failed jobs again, once their cause is fixed. A redriven job's user,
// opened from the job's seal (see [Sealer]), goes back through the command stream
// as a deletion command with the job's request id, deadline and trace context:
// intake takes it as the retry of a failed request id, so it is batched, claimed
// and followed like any command, the job's history is carried on (Job.Earlier),
// and its status events come again as submitted, processing, complete or failed,
// with the next attempt number. The command's Nats-Msg-Id names the request id and
// the failed attempt, so two redrives of the same failure within the stream's
// duplicate window publish it once, and a later one finds the job no longer failed
// and refuses it. It is safe while replicas run: it only publishes commands.

// RedriveSource is the CloudEvent source of the commands redrive publishes.
const RedriveSource = "heapdel-redrive"

// RedriveRequest chooses the failed jobs to redrive: those of RequestIDs when
// given, else every failed job; either way narrowed by Reason and by the time they
// failed, in [Since, Until). Without Yes nothing is published: the reply says what
// would be redriven.
type RedriveRequest struct {
	Reason     string    `json:"reason,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	Until      time.Time `json:"until,omitzero"`
	RequestIDs []string  `json:"request_ids,omitempty"`
	Yes        bool      `json:"yes,omitempty"`
	// After and Limit page through failed jobs by request id, as the jobs
	// endpoint does; Limit 0 takes [MaxRedrivePage].
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// MaxRedrivePage is the most jobs one redrive request chooses (a reply of that
// many fits the default max_payload of 1 MiB many times over).
const MaxRedrivePage = 1000

// RedriveItem is one job a redrive chose.
type RedriveItem struct {
	RequestID string    `json:"request_id"`
	Reason    string    `json:"reason,omitempty"`     // why it failed
	FailedAt  time.Time `json:"failed_at,omitzero"`   // when it failed
	Attempt   int       `json:"attempt"`              // the attempt the redrive starts; the job's own when refused
	Refused   string    `json:"refused,omitempty"`    // why it is not redriven
	Status    string    `json:"job_status,omitempty"` // the job's state when it is refused
}

// RedriveReply is what a redrive did (or, on a dry run, would do): the chosen jobs
// in request-id order, redriven ones and refused ones, and Next, the After of the
// following page when more failed jobs match.
type RedriveReply struct {
	DryRun   bool          `json:"dry_run"`
	Jobs     []RedriveItem `json:"jobs"`
	Redriven int           `json:"redriven"`
	Refused  int           `json:"refused"`
	Next     string        `json:"next,omitempty"`
}

// Why a chosen job is not redriven ([RedriveItem].Refused); [RefusalText] explains each.
const (
	RefusedNoJob     = "no_job"
	RefusedNoMatch   = "no_match"
	RefusedNotFailed = "not_failed"
	RefusedInvalid   = "invalid_command"
	RefusedNoSeal    = "no_sealed_user"
	RefusedKey       = "key_changed"
)

// RefusalText says what a Refused* code means and what to do instead.
func RefusalText(code string) string {
	switch code {
	case RefusedNoJob:
		return "no job for this request id (never received, or expired after HEAPDEL_JOB_RETENTION): re-send the deletion command"
	case RefusedNoMatch:
		return "the job does not match --reason/--since/--until"
	case RefusedNotFailed:
		return "the job is not failed (only failed jobs are redriven; a redriven one is in progress or done)"
	case RefusedInvalid:
		return "the command was invalid (heapdel never had a usable user): publish a corrected command with this request id"
	case RefusedNoSeal:
		return "the job holds no sealed user (accepted by a heapdel that kept none): re-send the deletion command with this request id"
	case RefusedKey:
		return "the sealed user does not open with this identity hash key: HEAPDEL_IDENTITY_HASH_KEY (or, when unset, the Heap API key it is derived from) changed since the job was accepted; redrive with the earlier key, or re-send the deletion command"
	}
	return code
}

// Redriver redrives failed jobs; see [RedriveRequest].
type Redriver struct {
	JS     jetstream.JetStream
	Jobs   jetstream.KeyValue // the job store
	Prefix string             // the subject prefix, "heap.deletion"
	Sealer *Sealer            // of the identity hash key the service runs with
	Now    func() time.Time   // nil: time.Now
}

// failureReasons are the reasons a failed job can have.
var failureReasons = []string{string(events.ReasonInvalidCommand), string(events.ReasonHeapRejected),
	string(events.ReasonHeapNotFound), string(events.ReasonTimeout)}

// Check validates a request, naming what is wrong.
func (r RedriveRequest) Check() error {
	if r.Reason != "" && !slices.Contains(failureReasons, r.Reason) {
		return fmt.Errorf("reason %q: a failed job's reason is one of %v", r.Reason, failureReasons)
	}
	if !r.Since.IsZero() && !r.Until.IsZero() && !r.Since.Before(r.Until) {
		return errors.New("since must be before until")
	}
	if len(r.RequestIDs) > MaxRedrivePage {
		return fmt.Errorf("at most %d request ids at once", MaxRedrivePage)
	}
	for _, id := range r.RequestIDs {
		if !validRequestID(id) {
			return fmt.Errorf("request id %q: 1-128 characters of A-Z a-z 0-9 . _ : -", id)
		}
	}
	if r.Limit < 0 || r.Limit > MaxRedrivePage {
		return fmt.Errorf("limit %d is outside 1-%d", r.Limit, MaxRedrivePage)
	}
	return nil
}

// Redrive chooses the jobs of req and, when req.Yes, publishes a command for each
// one that can be redriven. It returns the reply so far with an error when the job
// store cannot be read or a command cannot be published.
func (d *Redriver) Redrive(ctx context.Context, req RedriveRequest) (RedriveReply, error) {
	reply := RedriveReply{DryRun: !req.Yes, Jobs: []RedriveItem{}}
	if err := req.Check(); err != nil {
		return reply, err
	}
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	f := JobFilter{Reason: req.Reason, Since: req.Since, Until: req.Until, Now: now()}
	// Jobs are handled in request-id order, so the reply is sorted as it grows.
	redrive := func(j Job) error {
		item, cmd, ok := d.decide(j)
		if ok && req.Yes {
			if err := d.publish(ctx, j, cmd); err != nil {
				return fmt.Errorf("redrive %s: %w", j.RequestID, err)
			}
		}
		reply.add(item)
		return nil
	}
	if len(req.RequestIDs) == 0 {
		limit := req.Limit
		if limit == 0 {
			limit = MaxRedrivePage
		}
		f.Status, f.After = []string{stateFailed}, req.After
		jobs, next, err := JobPage(ctx, d.Jobs, f, limit)
		if err != nil {
			return reply, err
		}
		reply.Next = next
		for _, j := range jobs {
			if err := redrive(j); err != nil {
				return reply, err
			}
		}
		return reply, nil
	}
	ids := slices.Clone(req.RequestIDs)
	slices.Sort(ids)
	for _, id := range slices.Compact(ids) {
		j, err := d.job(ctx, id)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			reply.add(RedriveItem{RequestID: id, Refused: RefusedNoJob})
		case err != nil:
			return reply, err
		case !f.Match(j):
			reply.add(RedriveItem{RequestID: id, Reason: j.Reason, FailedAt: j.CompletedAt, Attempt: j.Attempt, Status: j.Status,
				Refused: RefusedNoMatch})
		default:
			if err := redrive(j); err != nil {
				return reply, err
			}
		}
	}
	return reply, nil
}

func (r *RedriveReply) add(it RedriveItem) {
	r.Jobs = append(r.Jobs, it)
	if it.Refused != "" {
		r.Refused++
	} else {
		r.Redriven++
	}
}

func (d *Redriver) job(ctx context.Context, id string) (Job, error) {
	e, err := d.Jobs.Get(ctx, JobKey(id))
	if errors.Is(err, jetstream.ErrKeyDeleted) {
		err = jetstream.ErrKeyNotFound
	}
	if err != nil {
		return Job{}, err
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return Job{}, fmt.Errorf("decode job %s: %w", id, err)
	}
	return j, nil
}

// decide says whether j can be redriven, and with which command.
func (d *Redriver) decide(j Job) (RedriveItem, events.Command, bool) {
	it := RedriveItem{RequestID: j.RequestID, Reason: j.Reason, FailedAt: j.CompletedAt, Attempt: j.Attempt}
	refuse := func(why string) (RedriveItem, events.Command, bool) {
		it.Refused, it.Status = why, j.Status
		return it, events.Command{}, false
	}
	switch {
	case j.Status != stateFailed:
		return refuse(RefusedNotFailed)
	case j.Reason == string(events.ReasonInvalidCommand):
		return refuse(RefusedInvalid)
	case j.Sealed == "":
		return refuse(RefusedNoSeal)
	}
	identity, userID, err := d.Sealer.Open(j.RequestID, j.Sealed)
	if err != nil {
		return refuse(RefusedKey)
	}
	it.Attempt = j.Attempt + 1
	return it, events.Command{
		RequestID: j.RequestID, Identity: identity, UserID: userID, Deadline: j.Deadline,
		EventID: "heapdel-redrive-" + j.RequestID + "-" + strconv.Itoa(j.Attempt),
		Source:  RedriveSource, Time: j.RequestedAt,
		TraceParent: j.TraceParent, TraceState: j.TraceState,
	}, true
}

// publish sends the redrive command of a job's failed attempt; a second one
// within the duplicate window is dropped by JetStream (the same Nats-Msg-Id).
func (d *Redriver) publish(ctx context.Context, j Job, c events.Command) error {
	m, err := events.NewCommandMsg(d.Prefix+".requested", c, false)
	if err != nil {
		return err
	}
	m.Header.Set(nats.MsgIdHdr, c.EventID)
	_, err = d.JS.PublishMsg(ctx, m)
	return err
}
