package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/heapclient"
)

func cmdCheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("check [flags]", "Verifies the configuration, NATS access (streams, consumers, key-value buckets and, with\nHEAPDEL_PROVISION=false, every setting of theirs heapdel relies on) and the Heap\ncredentials (fetches a token). Deletes nothing and publishes nothing. Exits 1 when\nanything is wrong, saying what and how to fix it.", stdout)
	loader := config.NewLoader(fs, getenv, config.SetAll)
	cfg, err := loadConfig(fs, loader, args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ok := true
	report := func(good bool, what, detail string) {
		mark := "ok  "
		if !good {
			mark, ok = "FAIL", false
		}
		fmt.Fprintf(stdout, "%s %s", mark, what)
		if detail != "" {
			fmt.Fprintf(stdout, ": %s", detail)
		}
		fmt.Fprintln(stdout)
	}
	warn := func(what, detail string) { fmt.Fprintf(stdout, "warn %s: %s\n", what, detail) }
	report(true, "configuration", "every setting valid")

	log := newLogger(cfg, io.Discard)
	if cfg.NATSURL == "" {
		// The embedded default: a running `heapdel run` listens on 4222 with that
		// store open; check through it rather than open the store a second time.
		if probe, perr := nats.Connect(nats.DefaultURL, nats.Timeout(time.Second)); perr == nil {
			probe.Close()
			cfg.NATSURL = nats.DefaultURL
		}
	}
	srv, nc, err := connectNATS(cfg, log, -1, "heapdel-check")
	if err != nil {
		report(false, "NATS", err.Error())
	} else {
		defer func() {
			nc.Close()
			if srv != nil {
				srv.Shutdown()
			}
		}()
		where := nc.ConnectedUrlRedacted()
		if srv != nil {
			where = "embedded server in " + cfg.DataDir
		}
		report(true, "NATS connection", where+" (server "+nc.ConnectedServerVersion()+")")
		checkNATS(ctx, cfg, nc, report, warn)
	}

	heap, err := heapclient.New(heapclient.Config{
		BaseURL: cfg.HeapBaseURL, AppID: cfg.HeapAppID, APIKey: cfg.HeapAPIKey,
		RequestTimeout: cfg.HeapTimeout, Rate: cfg.HeapRate, Burst: cfg.HeapBurst,
		MaxRetries: 2, RetryBudget: 20 * time.Second, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		report(false, "Heap client", err.Error())
	} else if err := heap.CheckCredentials(ctx); err != nil {
		detail := err.Error()
		if errors.Is(err, heapclient.ErrUnauthorized) {
			detail = "Heap rejected the app id or API key: HEAPDEL_HEAP_APP_ID must be the Main Production environment id, and HEAPDEL_HEAP_API_KEY (or _FILE) a valid key"
		}
		report(false, "Heap credentials at "+cfg.HeapBaseURL, detail)
	} else {
		report(true, "Heap credentials at "+cfg.HeapBaseURL, "token fetched")
	}
	if !ok {
		return exitCode(1)
	}
	fmt.Fprintln(stdout, "all checks passed")
	return nil
}

// checkNATS checks the streams, consumers and buckets heapdel uses. With
// provisioning on, a missing one is fine ('heapdel run' creates it and corrects
// the rest); with provisioning off, every setting heapdel relies on is verified
// ([consumer.Verify]) and each finding is one line, a warning included.
func checkNATS(ctx context.Context, cfg config.Config, nc *nats.Conn, report func(bool, string, string), warn func(string, string)) {
	js, err := jetstream.New(nc)
	if err != nil {
		report(false, "JetStream", err.Error())
		return
	}
	ccfg := consumerConfig(cfg, appOptions{})
	if !cfg.Provision {
		// No account request: a locked-down user (docs/nats-permissions.md) may
		// only read heapdel's own objects. Verify says when JetStream is off.
		verifyNATS(ctx, js, ccfg, report, warn)
		return
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		report(false, "JetStream", err.Error()+" (is JetStream enabled for this account?)")
		return
	}
	for _, r := range ccfg.Resources() {
		var err error
		switch r.Kind {
		case "stream":
			_, err = js.Stream(ctx, r.Name)
		case "consumer":
			_, err = js.Consumer(ctx, r.Stream, r.Name)
		case "key-value bucket":
			_, err = js.KeyValue(ctx, r.Name)
		}
		what := r.Kind + " " + r.Name
		switch {
		case err == nil:
			report(true, what, "present")
		case errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrBucketNotFound):
			report(true, what, "absent; 'heapdel run' creates it (HEAPDEL_PROVISION=true)")
		default:
			report(false, what, err.Error())
		}
	}
	// The recheck schedule (nats-server 2.14+): without it nothing follows deletions.
	// Older servers get replica-published ticks and need none.
	if !consumer.SupportsSchedules(nc.ConnectedServerVersion()) {
		report(true, "recheck ticks", "server "+nc.ConnectedServerVersion()+" has no message schedules: each replica publishes the tick")
		return
	}
	subject := cfg.SubjectPrefix + ".schedule.recheck"
	what := "recheck schedule on " + subject
	st, err := js.Stream(ctx, cfg.StreamName()+"_SCHEDULE")
	if err != nil {
		report(true, what, "absent; 'heapdel run' publishes it")
		return
	}
	switch m, err := st.GetLastMsgForSubject(ctx, subject); {
	case err == nil && m.Header.Get("Nats-Schedule") != consumer.SchedulePattern(cfg.RecheckInterval):
		report(true, what, fmt.Sprintf("%s differs from HEAPDEL_RECHECK_INTERVAL (%s); 'heapdel run' replaces it", m.Header.Get("Nats-Schedule"), consumer.SchedulePattern(cfg.RecheckInterval)))
	case err == nil:
		report(true, what, m.Header.Get("Nats-Schedule"))
	default:
		report(true, what, "absent; 'heapdel run' publishes it")
	}
}

// verifyNATS reports, with provisioning off, each object of ccfg.Resources as
// ok or with its findings, then the recheck schedule.
func verifyNATS(ctx context.Context, js jetstream.JetStream, ccfg consumer.Config, report func(bool, string, string), warn func(string, string)) {
	findings := consumer.Verify(ctx, js, ccfg)
	done := map[string]bool{}
	show := func(object string) bool {
		found := false
		for _, f := range findings {
			if f.Object != object {
				continue
			}
			found = true
			if f.Warning {
				warn(f.Object, f.Problem+"; fix: "+f.Fix)
			} else {
				report(false, f.Object, f.Problem+"; fix: "+f.Fix)
			}
		}
		done[object] = true
		return found
	}
	for _, r := range ccfg.Resources() {
		if what := r.Kind + " " + r.Name; !show(what) {
			report(true, what, "present, as heapdel needs it")
		}
	}
	if version := js.Conn().ConnectedServerVersion(); consumer.SupportsSchedules(version) {
		what := "recheck schedule on " + ccfg.Prefix + ".schedule.recheck"
		if !show(what) {
			report(true, what, "present, "+consumer.SchedulePattern(ccfg.RecheckInterval))
		}
	}
	for _, f := range findings {
		if !done[f.Object] {
			show(f.Object)
		}
	}
}
