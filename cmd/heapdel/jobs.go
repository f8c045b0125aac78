package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
)

func cmdJobs(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("jobs [flags]", `Lists jobs, filtered. All filters must hold. With --limit N (default 100) it shows
one page sorted by request id and, when there are more, the --after that shows the
next; it asks the heapdel service (NATS micro service, heap.deletion.api.jobs) when
one answers and reads the job store otherwise. --limit 0 streams every job from the
job store, in the store's order (not sorted), in flat memory.
Never shows an identity nor its hash.`, stdout)
	loader := config.NewLoader(fs, getenv, config.SetNATS)
	status := fs.String("status", "", "only these states, comma-separated: "+strings.Join(consumer.JobStates(), ", "))
	reason := fs.String("reason", "", "only this reason (heap_rejected, heap_not_found, timeout, invalid_command; heap_answer_unreadable for held jobs)")
	olderThan := fs.String("older-than", "", "only jobs requested longer ago than this (36h, 7d)")
	breached := fs.Bool("breached", false, "only jobs whose deadline was missed (completed after it, or not complete and past it)")
	dueWithin := fs.String("due-within", "", "only jobs not complete whose deadline is within this (24h, 7d)")
	prefix := fs.String("prefix", "", "only request ids that start with this")
	since := fs.String("since", "", "only jobs finished (complete or failed) at or after this time (RFC 3339, or a date 2006-01-02 meaning 00:00 UTC)")
	until := fs.String("until", "", "only jobs finished before this time (RFC 3339, or a date)")
	after := fs.String("after", "", "the page after this request id (printed at the end of the previous page)")
	limit := fs.Int("limit", 100, "jobs per page; 0 lists every job, streamed from the job store, unsorted")
	asJSON := fs.Bool("json", false, "one JSON object (the job record, without identity hash) per line, for scripts")
	direct := fs.Bool("direct", false, "read the job store directly, without asking the heapdel service")
	cfg, err := loadConfig(fs, loader, args, stderr)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "heapdel jobs: unexpected argument %q\n", fs.Arg(0))
		return exitCode(2)
	}
	req := consumer.JobsRequest{Reason: *reason, OlderThan: *olderThan, Breached: *breached,
		DueWithin: *dueWithin, Prefix: *prefix, After: *after, Limit: *limit}
	if *status != "" {
		req.Status = strings.Split(*status, ",")
	}
	if req.Since, req.Until, err = parseWindow(*since, *until); err != nil {
		fmt.Fprintf(stderr, "heapdel jobs: %v\n", err)
		return exitCode(2)
	}
	filter, err := req.Filter(time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "heapdel jobs:", err)
		return exitCode(2)
	}
	cl, err := dialJobs(cfg, stderr, "heapdel-jobs")
	if err != nil {
		return err
	}
	defer cl.close()

	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	out := jobPrinter(bw, *asJSON)

	if *limit == 0 {
		kv, err := cl.store(ctx)
		if err != nil {
			return err
		}
		n := 0
		err = consumer.ListJobs(ctx, kv, filter, func(j consumer.Job) error {
			n++
			return out(j)
		})
		if err != nil {
			return err
		}
		if !*asJSON && n == 0 {
			fmt.Fprintln(stderr, "heapdel jobs: no job matches")
		}
		return bw.Flush()
	}

	var jobs []consumer.Job
	var next string
	answered := false
	if !*direct && *limit <= consumer.MaxPageLimit {
		var reply consumer.JobsReply
		answered, err = cl.ask(ctx, consumer.EndpointJobs, req, &reply, 30*time.Second)
		if serviceFailed(err) {
			fmt.Fprintf(stderr, "heapdel jobs: %v; reading the job store instead\n", err)
			answered, err = false, nil
		}
		if err != nil {
			return err
		}
		for _, j := range reply.Jobs {
			jobs = append(jobs, j.Job)
		}
		next = reply.Next
	}
	if !answered {
		kv, err := cl.store(ctx)
		if err != nil {
			return err
		}
		if jobs, next, err = consumer.JobPage(ctx, kv, filter, *limit); err != nil {
			return err
		}
	}
	for _, j := range jobs {
		if err := out(j); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	switch {
	case next != "":
		fmt.Fprintf(stderr, "heapdel jobs: more jobs match: add --after %s for the next page\n", next)
	case len(jobs) == 0 && !*asJSON:
		fmt.Fprintln(stderr, "heapdel jobs: no job matches")
	}
	return nil
}

// jobPrinter returns a function that prints one job, as a table row for people or
// a JSON line for scripts. The table has fixed-width columns, so rows can be
// printed as they arrive; the header comes first.
func jobPrinter(w io.Writer, asJSON bool) func(consumer.Job) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return func(j consumer.Job) error { return enc.Encode(consumer.Public(j)) }
	}
	const row = "%-28s %-10s %-22s %7s  %-17s %-17s %-17s %-17s %s\n"
	header := false
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04Z")
	}
	return func(j consumer.Job) error {
		if !header {
			header = true
			fmt.Fprintf(w, row, "REQUEST ID", "STATUS", "REASON", "ATTEMPT", "REQUESTED", "SUBMITTED", "COMPLETED", "DEADLINE", "HEAP REQUEST ID")
		}
		_, err := fmt.Fprintf(w, row, j.RequestID, j.Status, orDash(j.Reason), fmt.Sprint(j.Attempt),
			ts(j.RequestedAt), ts(j.SubmittedAt), ts(j.CompletedAt), ts(j.Deadline), orDash(j.HeapDeletionRequestID))
		return err
	}
}

// jobsClient is what the operator commands (status, jobs, report) use: the
// heapdel service's API when one answers, else the job store read directly.
type jobsClient struct {
	cfg config.Config
	nc  *nats.Conn
	// refused receives a permission violation on the API's subjects: the request
	// is abandoned at once for the job store instead of waiting for its timeout.
	refused chan struct{}
}

// dialJobs connects to NATS as `heapdel status` does (HEAPDEL_NATS_URL, the local
// server when empty, and the NATS auth settings).
func dialJobs(cfg config.Config, stderr io.Writer, name string) (*jobsClient, error) {
	if cfg.NATSURL == "" {
		cfg.NATSURL = nats.DefaultURL
	}
	log := newLogger(cfg, stderr)
	c := &jobsClient{cfg: cfg, refused: make(chan struct{}, 1)}
	apiSubjects := consumer.APISubject(cfg.SubjectPrefix, "")
	base := asyncErrorHandler(cfg, log)
	onErr := func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), apiSubjects) {
			select {
			case c.refused <- struct{}{}:
			default:
			}
			return
		}
		base(nc, sub, err)
	}
	_, nc, err := connectNATS(cfg, log, 0, name, nats.ErrorHandler(onErr))
	if err != nil {
		return nil, err
	}
	c.nc = nc
	return c, nil
}

func (c *jobsClient) close() { c.nc.Close() }

// store binds the job store.
func (c *jobsClient) store(ctx context.Context) (jetstream.KeyValue, error) {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, c.cfg.JobBucket())
	if err != nil {
		return nil, fmt.Errorf("job store %s: %w (has heapdel run against this NATS? reading it needs the job-reader permissions of docs/nats-permissions.md)", c.cfg.JobBucket(), err)
	}
	return kv, nil
}

// errAPI is an error the heapdel service answered, with its micro error code.
type errAPI struct {
	code, msg string
}

// serviceFailed reports whether err is the service's own failure (5xx), which a
// command gets round by reading the job store itself.
func serviceFailed(err error) bool {
	var e *errAPI
	return errors.As(err, &e) && strings.HasPrefix(e.code, "5")
}

func (e *errAPI) Error() string { return fmt.Sprintf("heapdel service: %s (%s)", e.msg, e.code) }

// ask sends req to an endpoint of the heapdel service and decodes its JSON reply
// into reply. answered is false when no service answers (none running, or this
// user may not publish on the API's subjects), so the caller reads the job store
// instead. An error the service answered is an *errAPI.
func (c *jobsClient) ask(ctx context.Context, endpoint string, req, reply any, timeout time.Duration) (answered bool, err error) {
	m, ok, err := c.request(ctx, endpoint, req, timeout)
	if !ok || err != nil {
		return ok, err
	}
	if err := json.Unmarshal(m.Data, reply); err != nil {
		return true, fmt.Errorf("heapdel service: undecodable %s reply: %w", endpoint, err)
	}
	return true, nil
}

func (c *jobsClient) request(ctx context.Context, endpoint string, req any, timeout time.Duration) (*nats.Msg, bool, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, false, err
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	go func() {
		select {
		case <-c.refused:
			cancel()
		case <-rctx.Done():
		}
	}()
	m, err := c.nc.RequestWithContext(rctx, consumer.APISubject(c.cfg.SubjectPrefix, endpoint), body)
	switch {
	case ctx.Err() != nil:
		return nil, false, ctx.Err()
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, nats.ErrTimeout):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		return m, true, &errAPI{code: code, msg: m.Header.Get(micro.ErrorHeader)}
	}
	return m, true, nil
}
