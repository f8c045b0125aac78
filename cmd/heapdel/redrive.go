package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

var _ flag.Value = (*stringList)(nil)

func cmdRedrive(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("redrive [flags]", `Runs failed jobs again once their cause is fixed (a Heap answer that rejected
users, a deletion request Heap lost, one still pending at HEAPDEL_MAX_PENDING).
Without --yes it only prints what it would redrive. Chooses failed jobs by
--reason, by when they failed (--since, --until) and by --request-id; all given
filters must hold. A redriven job is sent to Heap again through the command
stream: it keeps its history and publishes submitted, processing, complete (or
failed) again with the next attempt number. Jobs that are not failed are
refused, so running it twice, or while replicas run, redrives each job once.
It asks the heapdel service (NATS micro service, heap.deletion.api.redrive) when
one answers; otherwise it works on the job store itself, which needs the
identity hash key heapdel run uses (HEAPDEL_IDENTITY_HASH_KEY, or the Heap API
key it is derived from) and the redrive permissions of docs/nats-permissions.md.
Never shows an identity.`, stdout)
	loader := config.NewLoader(fs, getenv, config.SetNATS)
	reason := fs.String("reason", "", "only jobs that failed with this reason: heap_rejected, heap_not_found or timeout")
	since := fs.String("since", "", "only jobs that failed at or after this time (RFC 3339, or a date 2006-01-02 meaning 00:00 UTC)")
	until := fs.String("until", "", "only jobs that failed before this time (RFC 3339, or a date)")
	var reqIDs stringList
	fs.Var(&reqIDs, "request-id", "only this request id (repeat the flag for several, at most 1000)")
	yes := fs.Bool("yes", false, "redrive; without it, only print what would be redriven")
	asJSON := fs.Bool("json", false, "one JSON object per chosen job, for scripts")
	direct := fs.Bool("direct", false, "work on the job store directly, without asking the heapdel service")
	cfg, err := loadConfig(fs, loader, args, stderr)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "heapdel redrive: unexpected argument %q (request ids go with --request-id)\n", fs.Arg(0))
		return exitCode(2)
	}
	req := consumer.RedriveRequest{Reason: *reason, RequestIDs: reqIDs, Yes: *yes}
	if req.Since, req.Until, err = parseWindow(*since, *until); err != nil {
		fmt.Fprintf(stderr, "heapdel redrive: %v\n", err)
		return exitCode(2)
	}
	if err := req.Check(); err != nil {
		fmt.Fprintln(stderr, "heapdel redrive:", err)
		return exitCode(2)
	}

	cl, err := dialJobs(cfg, stderr, "heapdel-redrive")
	if err != nil {
		return err
	}
	defer cl.close()
	var local *consumer.Redriver // the job store itself, once no service answered
	page := func(req consumer.RedriveRequest) (consumer.RedriveReply, error) {
		if local == nil && !*direct {
			var reply consumer.RedriveReply
			answered, err := cl.ask(ctx, consumer.EndpointRedrive, req, &reply, 60*time.Second)
			if answered || err != nil {
				return reply, err
			}
		}
		if local == nil {
			if local, err = directRedriver(ctx, cl, cfg, getenv); err != nil {
				return consumer.RedriveReply{}, err
			}
		}
		return local.Redrive(ctx, req)
	}

	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	show := redrivePrinter(bw, *asJSON, *yes)
	var total consumer.RedriveReply
	refusals := map[string]bool{}
	for {
		reply, err := page(req)
		for _, it := range reply.Jobs {
			if it.Refused != "" {
				refusals[it.Refused] = true
			}
			if err := show(it); err != nil {
				return err
			}
		}
		total.Redriven += reply.Redriven
		total.Refused += reply.Refused
		if err != nil {
			_ = bw.Flush()
			if *yes && total.Redriven > 0 {
				fmt.Fprintf(stderr, "heapdel redrive: %d jobs redriven before an error; running it again redrives the rest\n", total.Redriven)
			}
			return err
		}
		if reply.Next == "" {
			break
		}
		req.After = reply.Next
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	for _, code := range slices.Sorted(maps.Keys(refusals)) {
		fmt.Fprintf(stderr, "refused %s: %s\n", code, consumer.RefusalText(code))
	}
	switch {
	case total.Redriven == 0 && total.Refused == 0:
		fmt.Fprintln(stderr, "heapdel redrive: no failed job matches")
	case *yes:
		fmt.Fprintf(stderr, "heapdel redrive: %d redriven, %d refused; follow them with heapdel jobs --status processing, or their status events\n", total.Redriven, total.Refused)
	default:
		fmt.Fprintf(stderr, "heapdel redrive: dry run: %d would be redriven, %d refused; add --yes to redrive\n", total.Redriven, total.Refused)
	}
	return nil
}

// directRedriver redrives from the job store itself, with the identity hash key of
// this environment.
func directRedriver(ctx context.Context, cl *jobsClient, cfg config.Config, getenv func(string) string) (*consumer.Redriver, error) {
	key, err := config.HashKeyFromEnv(getenv)
	if err != nil {
		return nil, fmt.Errorf("no heapdel service answered, and redriving from the job store needs the identity hash key: %w", err)
	}
	sealer, err := consumer.NewSealer(key)
	if err != nil {
		return nil, err
	}
	kv, err := cl.store(ctx)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(cl.nc)
	if err != nil {
		return nil, err
	}
	return &consumer.Redriver{JS: js, Jobs: kv, Prefix: cfg.SubjectPrefix, Sealer: sealer}, nil
}

// redrivePrinter prints one chosen job: a table row for people, a JSON line for scripts.
func redrivePrinter(w io.Writer, asJSON, yes bool) func(consumer.RedriveItem) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return func(it consumer.RedriveItem) error { return enc.Encode(it) }
	}
	const row = "%-28s %-16s %-17s %7s  %s\n"
	header := false
	return func(it consumer.RedriveItem) error {
		if !header {
			header = true
			fmt.Fprintf(w, row, "REQUEST ID", "REASON", "FAILED", "ATTEMPT", "OUTCOME")
		}
		outcome := "would redrive"
		switch {
		case it.Refused != "":
			outcome = "refused: " + it.Refused
			if it.Status != "" {
				outcome += " (" + it.Status + ")"
			}
		case yes:
			outcome = "redriven"
		}
		failed := "-"
		if !it.FailedAt.IsZero() {
			failed = it.FailedAt.UTC().Format("2006-01-02 15:04Z")
		}
		_, err := fmt.Fprintf(w, row, it.RequestID, orDash(it.Reason), failed, fmt.Sprint(it.Attempt), outcome)
		return err
	}
}
