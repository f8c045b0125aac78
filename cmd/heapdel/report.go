package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
)

func cmdReport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("report [flags] > report.csv", `Writes the audit report of finished jobs (complete and failed) to stdout, one row
per request id, as CSV with a header row or as JSON Lines, with the columns
`+strings.Join(consumer.ReportColumns(), ",")+`
(times RFC 3339 UTC, empty when unset; deadline_met empty without a deadline).
It never holds an identity nor its hash. It streams from the job store in the
store's order (not sorted), in flat memory, whatever the number of jobs.
Finished jobs expire HEAPDEL_JOB_RETENTION (default 2160h) after they end: take
the report before, or keep the status stream as the long-term record.`, stdout)
	loader := config.NewLoader(fs, getenv, config.SetNATS)
	format := fs.String("format", "csv", "csv or jsonl")
	since := fs.String("since", "", "only jobs finished at or after this time (RFC 3339, or a date 2006-01-02 meaning 00:00 UTC)")
	until := fs.String("until", "", "only jobs finished before this time (RFC 3339, or a date)")
	cfg, err := loadConfig(fs, loader, args, stderr)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "heapdel report: unexpected argument %q\n", fs.Arg(0))
		return exitCode(2)
	}
	f := consumer.JobFilter{Status: consumer.TerminalStates(), Now: time.Now()}
	if f.Since, f.Until, err = parseWindow(*since, *until); err != nil {
		fmt.Fprintf(stderr, "heapdel report: %v\n", err)
		return exitCode(2)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		fmt.Fprintln(stderr, "heapdel report: --until must be after --since")
		return exitCode(2)
	}
	bw := bufio.NewWriterSize(stdout, 64<<10)
	w, err := consumer.NewReportWriter(bw, *format)
	if err != nil {
		fmt.Fprintln(stderr, "heapdel report:", err)
		return exitCode(2)
	}
	cl, err := dialJobs(cfg, stderr, "heapdel-report")
	if err != nil {
		return err
	}
	defer cl.close()
	kv, err := cl.store(ctx)
	if err != nil {
		return err
	}
	rows := 0
	err = consumer.ListJobs(ctx, kv, f, func(j consumer.Job) error {
		rows++
		return w.Write(j)
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "heapdel report: %d finished jobs (jobs expire HEAPDEL_JOB_RETENTION after they end)\n", rows)
	return nil
}

// parseWindow reads the --since and --until of a command (see parseTime); the
// error names the flag.
func parseWindow(since, until string) (from, to time.Time, err error) {
	if from, err = parseTime(since); err != nil {
		return from, to, fmt.Errorf("--since: %w", err)
	}
	if to, err = parseTime(until); err != nil {
		return from, to, fmt.Errorf("--until: %w", err)
	}
	return from, to, nil
}

// parseTime reads an RFC 3339 time or a date (midnight UTC); "" is the zero time.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-01-31T00:00:00Z) nor a date (2026-01-31)", s)
}
