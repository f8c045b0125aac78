package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
)

func cmdStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("status [flags] <request-id>", "Shows a request id's job: its status, Heap deletion request, times and history.\nIt asks the heapdel service (heap.deletion.api.status) when one answers, and reads\nthe job store otherwise; only the job store holds the identity hash (--direct).", stdout)
	loader := config.NewLoader(fs, getenv, config.SetNATS)
	asJSON := fs.Bool("json", false, "print the job record as JSON, for scripts")
	direct := fs.Bool("direct", false, "read the job store directly, without asking the heapdel service (shows the identity hash)")
	args = flagsFirst(fs, args)
	cfg, err := loadConfig(fs, loader, args, stderr)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "heapdel status: give exactly one request id, e.g. heapdel status dsr-2026-000123")
		return exitCode(2)
	}
	reqID := fs.Arg(0)
	cl, err := dialJobs(cfg, stderr, "heapdel-status")
	if err != nil {
		return err
	}
	defer cl.close()
	notFound := func() error {
		fmt.Fprintf(stderr, "heapdel status: no job for request id %q (not taken yet: heapdel records it within HEAPDEL_BATCH_WAIT of taking it; or never received, invalid, or expired after HEAPDEL_JOB_RETENTION)\n", reqID)
		return exitCode(1)
	}
	var job consumer.Job
	answered := false
	if !*direct {
		var public consumer.PublicJob
		answered, err = cl.ask(ctx, consumer.EndpointStatus, consumer.StatusRequest{RequestID: reqID}, &public, 3*time.Second)
		var apiErr *errAPI
		switch {
		case errors.As(err, &apiErr) && apiErr.code == "404":
			return notFound()
		case errors.As(err, &apiErr) && apiErr.code == "400":
			fmt.Fprintf(stderr, "heapdel status: %q is not a request id (1-128 characters of A-Z a-z 0-9 . _ : -)\n", reqID)
			return exitCode(2)
		case serviceFailed(err):
			fmt.Fprintf(stderr, "heapdel status: %v; reading the job store instead\n", err)
			answered = false
		case err != nil:
			return err
		}
		job = public.Job
	}
	if !answered {
		kv, err := cl.store(ctx)
		if err != nil {
			return err
		}
		e, err := kv.Get(ctx, consumer.JobKey(reqID))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return notFound()
		}
		if err != nil {
			return fmt.Errorf("read job: %w", err)
		}
		if err := json.Unmarshal(e.Value(), &job); err != nil {
			return fmt.Errorf("decode job: %w", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if answered {
			return enc.Encode(consumer.Public(job))
		}
		job.Sealed = "" // the sealed user is for redrive alone, never shown
		return enc.Encode(job)
	}
	printJob(stdout, job)
	return nil
}

func printJob(w io.Writer, j consumer.Job) {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format(time.DateTime + " MST")
	}
	fmt.Fprintf(w, "request id      %s\n", j.RequestID)
	fmt.Fprintf(w, "status          %s", j.Status)
	if j.Reason != "" {
		fmt.Fprintf(w, " (%s)", j.Reason)
	}
	fmt.Fprintln(w)
	if j.Message != "" {
		fmt.Fprintf(w, "message         %s\n", j.Message)
	}
	fmt.Fprintf(w, "attempt         %d\n", j.Attempt)
	fmt.Fprintf(w, "heap request    %s\n", orDash(j.HeapDeletionRequestID))
	fmt.Fprintf(w, "requested       %s\n", ts(j.RequestedAt))
	fmt.Fprintf(w, "submitted       %s\n", ts(j.SubmittedAt))
	fmt.Fprintf(w, "completed       %s\n", ts(j.CompletedAt))
	if !j.Deadline.IsZero() {
		fmt.Fprintf(w, "deadline        %s\n", ts(j.Deadline))
	}
	if j.IdentityHash != "" { // the service does not serve it: only the job store holds it
		fmt.Fprintf(w, "identity hash   %s\n", j.IdentityHash)
	}
	fmt.Fprintln(w, "history")
	for _, t := range j.Earlier {
		note := fmt.Sprintf("  (attempt %d)", t.Attempt)
		if t.Note != "" {
			note += " " + t.Note
		}
		fmt.Fprintf(w, "  %s  %-10s%s\n", ts(t.At), t.Status, note)
	}
	for _, t := range j.History {
		note := ""
		if t.Note != "" {
			note = "  " + t.Note
		}
		fmt.Fprintf(w, "  %s  %-10s%s\n", ts(t.At), t.Status, note)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// flagsFirst moves the positional arguments after the flags, so that
// `heapdel status <id> --json` works as well as `heapdel status --json <id>`
// (the flag package stops at the first positional argument).
func flagsFirst(fs *flag.FlagSet, args []string) []string {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			f := fs.Lookup(name)
			if f == nil {
				continue // unknown: the flag package reports it
			}
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
				continue
			}
			if i+1 < len(args) { // the flag's value
				i++
				flags = append(flags, args[i])
			}
		default:
			positional = append(positional, a)
		}
	}
	return append(flags, positional...)
}
