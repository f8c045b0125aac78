package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/events"
)

func cmdPublish(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("publish [flags]", "Sends deletion commands to heap.deletion.requested (or <prefix>.requested).\nOne command: --request-id and --identity or --user-id. Load: --count N sends N\ncommands with request ids <request-id>-000001… and generated identities.", stdout)
	loader := config.NewLoader(fs, getenv, config.SetNATS)
	reqID := fs.String("request-id", "", "the command's request id (required)")
	identity := fs.String("identity", "", "the Heap identity to delete")
	userID := fs.String("user-id", "", "the Heap user id to delete (instead of --identity)")
	deadline := fs.String("deadline", "", "legal due date, RFC 3339 (optional)")
	count := fs.Int("count", 1, "how many commands to send (load)")
	structured := fs.Bool("structured", false, "send in structured mode (application/cloudevents+json) instead of binary")
	cfg, err := loadConfig(fs, loader, args, stderr)
	if err != nil {
		return err
	}
	if *reqID == "" || *count < 1 || (*identity != "" && *userID != "") || (*count == 1 && *identity == "" && *userID == "") {
		fmt.Fprintln(stderr, "heapdel publish: give --request-id and exactly one of --identity or --user-id (or --count N for load)")
		return exitCode(2)
	}
	base := events.Command{RequestID: *reqID, Identity: *identity, Source: "heapdel-publish"}
	if *userID != "" {
		id, err := strconv.ParseUint(*userID, 10, 64)
		if err != nil || id == 0 {
			fmt.Fprintln(stderr, "heapdel publish: --user-id must be a positive whole number")
			return exitCode(2)
		}
		base.UserID = id
	}
	if *deadline != "" {
		t, err := time.Parse(time.RFC3339, *deadline)
		if err != nil {
			fmt.Fprintln(stderr, "heapdel publish: --deadline must be RFC 3339, e.g. 2026-12-31T00:00:00Z")
			return exitCode(2)
		}
		base.Deadline = t
	}
	if cfg.NATSURL == "" {
		cfg.NATSURL = nats.DefaultURL // the embedded server of a local `heapdel run` or `demo`
	}
	log := newLogger(cfg, stderr)
	_, nc, err := connectNATS(cfg, log, 0, "heapdel-publish")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	subject := cfg.SubjectPrefix + ".requested"
	msgs := make([]*nats.Msg, 0, *count)
	for i := 1; i <= *count; i++ {
		c := base
		if *count > 1 {
			c.RequestID = fmt.Sprintf("%s-%06d", base.RequestID, i)
			if base.Identity == "" && base.UserID == 0 {
				c.Identity = fmt.Sprintf("load-%s-%d@example.invalid", base.RequestID, i)
			}
		}
		m, err := events.NewCommandMsg(subject, c, *structured)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	start := time.Now()
	if err := publishAll(ctx, js, msgs); err != nil {
		return fmt.Errorf("publish to %s: %w (is heapdel's stream provisioned? run 'heapdel run' or 'heapdel check')", subject, err)
	}
	el := time.Since(start)
	if *count == 1 {
		fmt.Fprintf(stdout, "published %s to %s\n", base.RequestID, subject)
	} else {
		fmt.Fprintf(stdout, "published %d commands to %s in %s (%.0f/s)\n", *count, subject, el.Round(time.Millisecond), float64(*count)/el.Seconds())
	}
	return nil
}
