package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/heapdel/heapdel/config"
)

// version is stamped in at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

// exitCode ends the program with a status and no further message: the command has
// already said what went wrong.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run the service (reads HEAPDEL_* settings)", cmdRun},
		{"demo", "embedded NATS + Heap simulator + service + sample traffic, for a first look", cmdDemo},
		{"heapsim", "serve the Heap API simulator on its own", cmdHeapsim},
		{"publish", "send deletion commands", cmdPublish},
		{"status", "show a request id's job state and history", cmdStatus},
		{"jobs", "list jobs by status, reason, age, deadline or request-id prefix", cmdJobs},
		{"redrive", "re-run failed jobs once the cause is fixed (a dry run without --yes)", cmdRedrive},
		{"report", "audit export of finished jobs (CSV or JSON Lines) to stdout", cmdReport},
		{"check", "verify configuration, NATS access and Heap credentials; deletes nothing", cmdCheck},
		{"bench", "measure throughput, latency and recheck cost on this machine", cmdBench},
		{"version", "print the version", cmdVersion},
	}
}

// run is the whole program: main only builds the signal context. Everything it needs
// comes in as a parameter, so tests start it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitCode(2)
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], getenv, stdout, stderr)
			if errors.Is(err, errHelp) {
				return nil // --help asked for and shown
			}
			return err
		}
	}
	fmt.Fprintf(stderr, "heapdel: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitCode(2)
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "heapdel deletes people from Heap when they ask to be forgotten: it reads CloudEvents\n")
	fmt.Fprintf(w, "deletion commands from NATS JetStream, submits them to Heap's User Deletion API in\n")
	fmt.Fprintf(w, "batches, follows them until Heap reports them complete and publishes status events.\n\n")
	fmt.Fprintf(w, "Usage: heapdel <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nEvery setting is an environment variable (HEAPDEL_*) and a flag; see 'heapdel run --help'.\n")
	fmt.Fprintf(w, "First look: heapdel demo\n")
}

// flagSet builds a command's flag set whose --help says what the command does.
func flagSet(name, synopsis string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("heapdel "+name, flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: heapdel %s\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; --help is a success, a bad flag exit status 2.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return exitCode(2)
	}
	return nil
}

var errHelp = errors.New("help shown")

// loadConfig parses flags and settings; a bad setting is printed as one line per
// problem and ends the program with status 2.
func loadConfig(fs *flag.FlagSet, loader *config.Loader, args []string, stderr io.Writer) (config.Config, error) {
	if err := parse(fs, args); err != nil {
		return config.Config{}, err
	}
	cfg, err := loader.Load()
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "heapdel: config:", line)
		}
		return config.Config{}, exitCode(2)
	}
	return cfg, nil
}

func cmdVersion(_ context.Context, _ []string, _ func(string) string, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "heapdel", buildVersion())
	return nil
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func cmdRun(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("run [flags]", "Runs the service: takes deletion commands from NATS, submits them to Heap, follows\nthem until complete and publishes status events. Serves /metrics, /healthz and\n/readyz on HEAPDEL_HTTP_ADDR. SIGTERM shuts down gracefully.", stdout)
	loader := config.NewLoader(fs, getenv, config.SetAll)
	cfg, err := loadConfig(fs, loader, args, stderr)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "heapdel run: unexpected argument %q (boolean flags take --flag=false)\n", fs.Arg(0))
		return exitCode(2)
	}
	log := newLogger(cfg, stderr)
	setMemoryLimit(log)
	app, err := start(ctx, cfg, log, appOptions{})
	if err != nil {
		log.Error().Err(err).Msg("heapdel could not start")
		return exitCode(1)
	}
	select {
	case <-ctx.Done():
		log.Info().Msg("shutting down")
		return app.close()
	case <-app.lost:
		// Logged with its fix when it happened (natsClosed).
		_ = app.close()
		return exitCode(1)
	}
}
