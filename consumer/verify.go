package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
)

// Finding is one way a JetStream object that heapdel uses differs from what
// provisioning would have made, in a way that matters.
type Finding struct {
	// Object names it as [Config.Resources] does ("stream HEAP_DELETION",
	// "consumer heapdel", "key-value bucket HEAP_DELETION_JOBS"), or "recheck
	// schedule on <subject>".
	Object string
	// Problem says what is wrong and what it does to deletions.
	Problem string
	// Fix says how to put it right.
	Fix string
	// Warning marks a difference heapdel works with (fewer replicas than
	// configured, a short AckWait); every other finding stops, stalls or loses work.
	Warning bool
}

// String is the finding on one line.
func (f Finding) String() string {
	return f.Object + ": " + f.Problem + "; fix: " + f.Fix
}

// ErrMisprovisioned is wrapped by [FindingsError]: JetStream objects made by
// someone other than heapdel are missing or not as heapdel needs them.
var ErrMisprovisioned = errors.New("JetStream objects are not as heapdel needs them")

// FindingsError returns nil when no finding is more than a warning, else an
// error wrapping [ErrMisprovisioned] that lists every such finding with its fix.
func FindingsError(findings []Finding) error {
	var lines []string
	for _, f := range findings {
		if !f.Warning {
			lines = append(lines, f.String())
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("%w (provisioning is off): %s", ErrMisprovisioned, strings.Join(lines, "; "))
}

// The fixes that come back in several findings.
const (
	fixProvision = "run heapdel once with HEAPDEL_PROVISION=true and credentials allowed to provision (docs/nats-permissions.md), which creates and corrects it"
	fixMigrate   = "JetStream cannot change this on an existing stream: run heapdel once with HEAPDEL_PROVISION=true and credentials allowed to provision, which recreates the stream keeping every queued command (docs/nats-permissions.md, migration)"
	fixRead      = "check the NATS connection and that heapdel's user may read it (docs/nats-permissions.md)"
	fixReplicas  = "set HEAPDEL_STREAM_REPLICAS to the replicas you chose, or change the object's replicas"
)

// Verify reads the streams, consumers and key-value buckets of cfg.Resources and
// the recheck schedule, and compares them with what provisioning creates: the
// settings heapdel relies on, not every field. It changes nothing, so it is the
// check to run when provisioning is off. It returns the findings in the order of
// [Config.Resources], none when everything is as heapdel needs it; an object it
// cannot read (NATS trouble, a missing permission) is a finding too. Each
// JetStream call is bounded by 5 s within ctx.
func Verify(ctx context.Context, js jetstream.JetStream, cfg Config) []Finding {
	cfg = cfg.withDefaults()
	// The configurations provisioning would create come from the same methods that
	// provisioning uses; they read only cfg and the server version.
	want := &Service{cfg: cfg, nc: js.Conn()}
	v := &verifier{ctx: ctx, js: js, cfg: cfg, schedules: want.serverSchedules()}
	streams := want.streamConfigs()
	v.commandStream(streams[0])
	if v.noJetStream {
		return v.findings
	}
	sched := v.scheduleStream(streams[1])
	v.statusStream(streams[2])
	v.commandConsumer(want.commandConsumerConfig())
	v.recheckConsumer(want.recheckConsumerConfig())
	for _, b := range want.bucketConfigs() {
		v.bucket(b)
	}
	if v.schedules {
		v.schedule(sched)
	}
	return v.findings
}

// verifier gathers the findings of one Verify.
type verifier struct {
	ctx         context.Context
	js          jetstream.JetStream
	cfg         Config
	schedules   bool // ticks come from a JetStream message schedule
	findings    []Finding
	noJetStream bool
}

func (v *verifier) add(object, problem, fix string) {
	v.findings = append(v.findings, Finding{Object: object, Problem: problem, Fix: fix})
}

func (v *verifier) warn(object, problem, fix string) {
	v.findings = append(v.findings, Finding{Object: object, Problem: problem, Fix: fix, Warning: true})
}

// call runs one JetStream request within its own bound.
func (v *verifier) call(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(v.ctx, apiTimeout)
	defer cancel()
	return f(ctx)
}

// stream reads a stream, or records why it cannot: missing, or unreadable.
func (v *verifier) stream(object, name string) jetstream.Stream {
	var st jetstream.Stream
	err := v.call(func(ctx context.Context) (err error) { st, err = v.js.Stream(ctx, name); return err })
	switch {
	case err == nil:
		return st
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		v.noJetStream = true
		v.findings = []Finding{{Object: "JetStream", Problem: err.Error(), Fix: "enable JetStream for heapdel's account"}}
	case errors.Is(err, jetstream.ErrStreamNotFound):
		v.add(object, "does not exist", fixProvision)
	default:
		v.add(object, "cannot be read: "+err.Error(), fixRead)
	}
	return nil
}

func (v *verifier) replicas(object string, have int) {
	if max(have, 1) != v.cfg.Replicas {
		v.warn(object, fmt.Sprintf("has %d replica(s), HEAPDEL_STREAM_REPLICAS is %d", max(have, 1), v.cfg.Replicas), fixReplicas)
	}
}

func (v *verifier) commandStream(want jetstream.StreamConfig) {
	object := "stream " + want.Name
	st := v.stream(object, want.Name)
	if st == nil {
		return
	}
	have := st.CachedInfo().Config
	requested := v.cfg.requestedSubject()
	switch {
	case !slices.Contains(have.Subjects, requested):
		v.add(object, fmt.Sprintf("captures %s but not %s: commands published there are stored nowhere", strings.Join(have.Subjects, ", "), requested),
			"add "+requested+" to its subjects, or run heapdel once with HEAPDEL_PROVISION=true")
	case len(have.Subjects) > 1:
		others := slices.DeleteFunc(slices.Clone(have.Subjects), func(s string) bool { return s == requested })
		problem := fmt.Sprintf("captures %s besides %s: anything published there is taken for a command", strings.Join(others, ", "), requested)
		if slices.Contains(others, v.cfg.recheckSubject()) || slices.Contains(others, v.cfg.scheduleSubject()) {
			problem += " (the layout of an earlier heapdel: the recheck schedule and ticks now live in " + v.cfg.ScheduleStream + ")"
		}
		v.add(object, problem, fixMigrate)
	}
	if have.Retention != jetstream.WorkQueuePolicy {
		v.add(object, fmt.Sprintf("has %s retention, not WorkQueue: heapdel relies on each command leaving the stream once it is acknowledged, and on being its only consumer", have.Retention),
			"JetStream cannot change a stream's retention: recreate it with WorkQueue retention once it holds no command, or let heapdel create it (HEAPDEL_PROVISION=true)")
	}
	if have.AllowRollup {
		v.add(object, "allows roll-ups: a publisher's Nats-Rollup header deletes the commands queued before it, which are then never submitted", fixMigrate)
	}
	if have.AllowMsgSchedules {
		v.add(object, "allows message schedules: a publisher can make the server publish commands (and schedules force roll-ups on)", fixMigrate)
	}
	if have.Sealed {
		v.add(object, "is sealed: JetStream refuses every new command (an interrupted migration?)",
			"run heapdel once with HEAPDEL_PROVISION=true and credentials allowed to provision, which finishes the migration")
	}
	v.dropLimits(object, have)
	v.replicas(object, have.Replicas)
}

// dropLimits reports limits under which JetStream removes queued commands that
// nobody has acknowledged. A limit with DiscardNew only refuses new commands, which
// publishers see and retry.
func (v *verifier) dropLimits(object string, have jetstream.StreamConfig) {
	const fix = "remove the limit: heapdel needs every queued command kept until it acknowledges it"
	if have.MaxAge > 0 {
		v.add(object, fmt.Sprintf("removes commands older than %s (MaxAge), done or not: commands waiting through a Heap outage are lost", have.MaxAge), fix)
	}
	if have.MaxMsgsPerSubject > 0 {
		v.add(object, fmt.Sprintf("keeps only %d message(s) per subject (MaxMsgsPerSubject), and every command has the same subject: older queued commands are lost", have.MaxMsgsPerSubject), fix)
	}
	if have.Discard == jetstream.DiscardOld && (have.MaxMsgs > 0 || have.MaxBytes > 0) {
		v.add(object, fmt.Sprintf("removes the oldest commands when full (MaxMsgs %d, MaxBytes %d, DiscardOld): queued commands are lost", have.MaxMsgs, have.MaxBytes),
			"remove the limits, or set Discard to New so that publishers are refused (and retry) instead")
	}
}

// scheduleStream checks the stream of the recheck schedule and its ticks and
// returns it for the schedule check, or nil.
func (v *verifier) scheduleStream(want jetstream.StreamConfig) jetstream.Stream {
	object := "stream " + want.Name
	st := v.stream(object, want.Name)
	if st == nil {
		return nil
	}
	have := st.CachedInfo().Config
	missing := func(subject, what string) {
		v.add(object, fmt.Sprintf("does not capture %s: %s", subject, what), "add "+subject+" to its subjects, or run heapdel once with HEAPDEL_PROVISION=true")
	}
	if !captures(have.Subjects, v.cfg.recheckSubject()) {
		missing(v.cfg.recheckSubject(), "recheck ticks are stored nowhere, so pending deletions are never followed to complete")
	}
	if v.schedules {
		if !captures(have.Subjects, v.cfg.scheduleSubject()) {
			missing(v.cfg.scheduleSubject(), "the recheck schedule cannot be stored, so no tick is produced")
		}
		if !have.AllowMsgSchedules {
			v.add(object, "does not allow message schedules: the server refuses the recheck schedule, so no tick is produced and pending deletions are never followed to complete",
				"turn message schedules on for the stream (AllowMsgSchedules, with AllowRollup), or run heapdel once with HEAPDEL_PROVISION=true")
		}
	}
	if have.Retention != jetstream.WorkQueuePolicy {
		v.warn(object, fmt.Sprintf("has %s retention, not WorkQueue: handled ticks stay in the stream until its limits remove them", have.Retention),
			"recreate it with WorkQueue retention, or let heapdel create it (HEAPDEL_PROVISION=true)")
	}
	v.replicas(object, have.Replicas)
	return st
}

func (v *verifier) statusStream(want jetstream.StreamConfig) {
	object := "stream " + want.Name
	st := v.stream(object, want.Name)
	if st == nil {
		return
	}
	have := st.CachedInfo().Config
	for _, status := range []events.Status{events.StatusSubmitted, events.StatusProcessing, events.StatusComplete, events.StatusFailed} {
		subject := v.cfg.Prefix + ".status." + string(status)
		if !captures(have.Subjects, subject) {
			v.add(object, fmt.Sprintf("does not capture %s: JetStream does not store those status events, and heapdel acknowledges no command until its events are stored", subject),
				"add "+v.cfg.statusSubjects()+" to its subjects")
		}
	}
	if have.MaxAge != want.MaxAge {
		v.warn(object, fmt.Sprintf("keeps status events for %s, HEAPDEL_STATUS_MAX_AGE is %s", durationOrForever(have.MaxAge), want.MaxAge),
			"set the stream's MaxAge, or HEAPDEL_STATUS_MAX_AGE, to the one you want")
	}
	v.replicas(object, have.Replicas)
}

// consumer reads a durable consumer and checks what both of heapdel's consumers
// need: pulled, filtered on exactly one subject, acknowledged explicitly. It
// returns the consumer's configuration, or nil when there is nothing more to check.
func (v *verifier) consumer(stream string, want jetstream.ConsumerConfig) *jetstream.ConsumerConfig {
	object := "consumer " + want.Durable
	var c jetstream.Consumer
	err := v.call(func(ctx context.Context) (err error) { c, err = v.js.Consumer(ctx, stream, want.Durable); return err })
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		v.add(object, "does not exist, nor does its stream "+stream, fixProvision)
		return nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		v.add(object, "does not exist on stream "+stream, fixProvision)
		return nil
	case err != nil:
		v.add(object, "cannot be read: "+err.Error(), fixRead)
		return nil
	}
	have := c.CachedInfo().Config
	if have.DeliverSubject != "" {
		v.add(object, "is a push consumer (it has a deliver subject): heapdel pulls its messages", "recreate it as a pull consumer (no deliver subject)")
	}
	filters := have.FilterSubjects
	if have.FilterSubject != "" {
		filters = append([]string{have.FilterSubject}, filters...)
	}
	if !slices.Equal(filters, []string{want.FilterSubject}) {
		got := strings.Join(filters, ", ")
		if got == "" {
			got = "nothing (every subject of the stream)"
		}
		v.add(object, fmt.Sprintf("filters on %s, not %s only: heapdel would get messages that are not its own, or miss its own", got, want.FilterSubject),
			"set its filter subject to "+want.FilterSubject+", or run heapdel once with HEAPDEL_PROVISION=true")
	}
	if have.AckPolicy != jetstream.AckExplicitPolicy {
		v.add(object, fmt.Sprintf("has ack policy %s, not AckExplicit: messages would count as done before heapdel has stored their outcome", have.AckPolicy),
			"recreate it with explicit acknowledgement (JetStream cannot change the ack policy of a consumer)")
	}
	return &have
}

func (v *verifier) commandConsumer(want jetstream.ConsumerConfig) {
	have := v.consumer(v.cfg.CommandStream, want)
	if have == nil {
		return
	}
	object := "consumer " + want.Durable
	if have.MaxDeliver > 0 {
		v.add(object, fmt.Sprintf("stops delivering a command after %d deliveries (MaxDeliver): a command that waits through a long Heap outage is then never submitted", have.MaxDeliver),
			"set MaxDeliver to -1 (unlimited), or run heapdel once with HEAPDEL_PROVISION=true")
	}
	if have.AckWait < want.AckWait {
		v.warn(object, fmt.Sprintf("has AckWait %s, shorter than heapdel's %s: commands gathering in a batch may go to another replica meanwhile (taken twice, submitted once)", have.AckWait, want.AckWait),
			"set AckWait to "+want.AckWait.String())
	}
	if have.MaxAckPending > 0 && have.MaxAckPending < v.cfg.BatchSize {
		v.warn(object, fmt.Sprintf("has MaxAckPending %d, below HEAPDEL_BATCH_SIZE %d: batches never fill and wait HEAPDEL_BATCH_WAIT each", have.MaxAckPending, v.cfg.BatchSize),
			fmt.Sprintf("set MaxAckPending to %d", want.MaxAckPending))
	}
}

func (v *verifier) recheckConsumer(want jetstream.ConsumerConfig) {
	have := v.consumer(v.cfg.ScheduleStream, want)
	if have == nil {
		return
	}
	object := "consumer " + want.Durable
	if have.MaxAckPending != 1 {
		v.add(object, fmt.Sprintf("has MaxAckPending %d, not 1: several replicas handle ticks at once and check the same Heap deletion requests twice", have.MaxAckPending),
			"set MaxAckPending to 1, or run heapdel once with HEAPDEL_PROVISION=true")
	}
	if have.AckWait <= tickKeepAlive {
		v.add(object, fmt.Sprintf("has AckWait %s: a tick still being handled (kept alive every %s) goes to a second replica", have.AckWait, tickKeepAlive),
			"set AckWait to "+want.AckWait.String())
	}
}

func (v *verifier) bucket(want jetstream.KeyValueConfig) {
	object := "key-value bucket " + want.Bucket
	st := v.stream(object, "KV_"+want.Bucket)
	if st == nil {
		return
	}
	have := st.CachedInfo().Config
	if !have.AllowMsgTTL {
		v.add(object, "has no per-entry TTLs (LimitMarkerTTL unset): JetStream refuses heapdel's writes that carry a TTL (finished jobs expiring, purge markers), and work stalls",
			fmt.Sprintf("turn per-entry TTLs on (stream KV_%s: AllowMsgTTL, SubjectDeleteMarkerTTL %s, as a bucket made with LimitMarkerTTL has), or run heapdel once with HEAPDEL_PROVISION=true", want.Bucket, want.LimitMarkerTTL))
	}
	if have.MaxAge > 0 {
		v.add(object, fmt.Sprintf("expires every entry after %s (TTL), whatever its state: a job in progress or a Heap deletion request still followed can vanish", have.MaxAge),
			"remove the bucket's TTL: heapdel gives each entry its own")
	}
	v.replicas(object, have.Replicas)
}

// schedule checks the recheck schedule message in its stream st (nil when the
// stream cannot be read).
func (v *verifier) schedule(st jetstream.Stream) {
	subject := v.cfg.scheduleSubject()
	object := "recheck schedule on " + subject
	const fix = "run heapdel once with HEAPDEL_PROVISION=true and credentials allowed to provision, which publishes it, or publish it yourself (docs/operations.md)"
	if st == nil {
		v.add(object, "cannot be checked: its stream "+v.cfg.ScheduleStream+" is missing or unreadable", fix)
		return
	}
	var m *jetstream.RawStreamMsg
	err := v.call(func(ctx context.Context) (err error) { m, err = st.GetLastMsgForSubject(ctx, subject); return err })
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		v.add(object, "is missing: no recheck tick is produced, so deletions are submitted but never followed to complete", fix)
		return
	case err != nil:
		v.add(object, "cannot be read: "+err.Error(), fixRead)
		return
	}
	pattern, target := m.Header.Get("Nats-Schedule"), m.Header.Get("Nats-Schedule-Target")
	wantPattern := SchedulePattern(v.cfg.RecheckInterval)
	if pattern != wantPattern || target != v.cfg.recheckSubject() {
		v.add(object, fmt.Sprintf("is %q towards %q, want %q towards %q (HEAPDEL_RECHECK_INTERVAL %s)", pattern, target, wantPattern, v.cfg.recheckSubject(), v.cfg.RecheckInterval),
			"run heapdel once with HEAPDEL_PROVISION=true and credentials allowed to provision, which replaces it, or set HEAPDEL_RECHECK_INTERVAL to the schedule's interval")
	}
}

// captures says whether a stream with these subjects stores messages on subject.
func captures(subjects []string, subject string) bool {
	return slices.ContainsFunc(subjects, func(p string) bool { return subjectMatches(p, subject) })
}

// subjectMatches says whether the literal subject matches pattern, with NATS
// wildcards: '*' one token, '>' one or more at the end.
func subjectMatches(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		switch {
		case p == ">":
			return len(st) > i
		case i >= len(st):
			return false
		case p != "*" && p != st[i]:
			return false
		}
	}
	return len(pt) == len(st)
}

func durationOrForever(d time.Duration) string {
	if d <= 0 {
		return "ever"
	}
	return d.String()
}
