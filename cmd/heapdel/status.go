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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
)

func cmdStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("status [flags] <request-id>", "Shows a request id's job: its status, Heap deletion request, times and history.", stdout)
	loader := config.NewLoader(fs, getenv, config.SetNATS)
	asJSON := fs.Bool("json", false, "print the job record as JSON, for scripts")
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
	if cfg.NATSURL == "" {
		cfg.NATSURL = nats.DefaultURL
	}
	_, nc, err := connectNATS(cfg, newLogger(cfg, stderr), 0, "heapdel-status")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, cfg.JobBucket())
	if err != nil {
		return fmt.Errorf("job store %s: %w (has heapdel run against this NATS?)", cfg.JobBucket(), err)
	}
	e, err := kv.Get(ctx, consumer.JobKey(reqID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		fmt.Fprintf(stderr, "heapdel status: no job for request id %q (not taken yet: heapdel records it within HEAPDEL_BATCH_WAIT of taking it; or never received, invalid, or expired after HEAPDEL_JOB_RETENTION)\n", reqID)
		return exitCode(1)
	}
	if err != nil {
		return fmt.Errorf("read job: %w", err)
	}
	var job consumer.Job
	if err := json.Unmarshal(e.Value(), &job); err != nil {
		return fmt.Errorf("decode job: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
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
	fmt.Fprintf(w, "identity hash   %s\n", j.IdentityHash)
	fmt.Fprintln(w, "history")
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
