package consumer

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the pipeline's Prometheus series. No label ever holds a request id,
// an identity or a user id.
type metrics struct {
	commands        *prometheus.CounterVec // outcome: accepted, duplicate, invalid
	statusEvents    *prometheus.CounterVec // status
	jobsPending     prometheus.Gauge
	oldestPending   prometheus.Gauge
	duration        prometheus.Histogram
	batches         *prometheus.CounterVec // trigger: size, wait, shutdown
	heapFailures    *prometheus.CounterVec // kind: retryable, rejected, unauthorized, unreadable, other
	credsRejected   prometheus.Counter
	rechecks        *prometheus.CounterVec // result: pending, complete, not_found, timeout, error
	ticks           prometheus.Counter
	ready           prometheus.Gauge
	backlog         prometheus.Gauge
	redeliveries    prometheus.Counter
	pendingRequests prometheus.Gauge
	deadlineDue     *prometheus.GaugeVec // within: 24h, 7d
	deadlineBreach  prometheus.Gauge
	completedLate   prometheus.Counter
	rollups         prometheus.Counter
	tickDuration    prometheus.Histogram
	stalled         *prometheus.GaugeVec // cause: store, schedule
	storeRetries    prometheus.Counter
	reconciled      *prometheus.CounterVec // what: refollowed, orphaned_claim, missing_job
	jobsStuck       *prometheus.GaugeVec   // reason: held, orphaned
}

// What the reconciler (and a re-send taking over a claim) repaired.
const (
	repairRefollowed    = "refollowed"
	repairOrphanedClaim = "orphaned_claim"
	repairMissingJob    = "missing_job"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_commands_total",
			Help: "Deletion commands taken, by outcome (accepted, duplicate, invalid).",
		}, []string{"outcome"}),
		statusEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_status_events_total",
			Help: "Status events published, by status.",
		}, []string{"status"}),
		jobsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "heapdel_jobs_pending",
			Help: "Deletions submitted to Heap and not yet reported complete.",
		}),
		oldestPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "heapdel_oldest_pending_seconds",
			Help: "Age of the oldest Heap deletion request still pending.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "heapdel_deletion_duration_seconds",
			Help:    "Time from Heap submission to Heap reporting the deletion complete.",
			Buckets: []float64{1, 10, 60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400},
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_batches_total",
			Help: "Batches handed to Heap, by what closed them (size, wait, shutdown).",
		}, []string{"trigger"}),
		heapFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_heap_submit_failures_total",
			Help: "Heap submissions that failed, by kind (retryable, rejected, unauthorized, unreadable: a 2xx without a deletion request id, other).",
		}, []string{"kind"}),
		credsRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "heapdel_heap_credentials_rejected_total",
			Help: "Heap calls that failed because Heap refused heapdel itself: the app id or API key (401), or the base URL or a proxy (403, 404, 405).",
		}),
		rechecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_rechecks_total",
			Help: "Status checks of pending Heap deletion requests, by result.",
		}, []string{"result"}),
		ticks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "heapdel_recheck_ticks_total",
			Help: "Recheck ticks handled by this replica.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "heapdel_ready",
			Help: "1 when this replica is ready (NATS connected, consumer bound, Heap credentials accepted).",
		}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "heapdel_commands_backlog",
			Help: "Deletion commands in the stream not yet acknowledged (pending plus in flight).",
		}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "heapdel_commands_redelivered_total",
			Help: "Commands received again after a crash, a nak or an expired AckWait.",
		}),
		pendingRequests: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "heapdel_heap_requests_pending",
			Help: "Heap deletion requests being followed until complete.",
		}),
		deadlineDue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "heapdel_deadline_pending_due",
			Help: "Deletions not yet complete (waiting for Heap to accept them, or pending in Heap) whose legal deadline falls within the window (24h, 7d) from now.",
		}, []string{"within"}),
		deadlineBreach: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "heapdel_deadline_pending_breached",
			Help: "Deletions not yet complete (waiting for Heap to accept them, or pending in Heap) already past their legal deadline.",
		}),
		tickDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "heapdel_recheck_tick_duration_seconds",
			Help:    "Time one recheck tick took on this replica (status checks of the due Heap requests).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		completedLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "heapdel_deadline_completed_late_total",
			Help: "Deletions that completed after their legal deadline.",
		}),
		rollups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "heapdel_commands_rollup_total",
			Help: "Commands that arrived with a Nats-Rollup header: JetStream deleted the commands queued before each of them on its subject (or in the whole stream), so deletions may have been lost.",
		}),
		stalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "heapdel_stalled",
			Help: "1 while work is stalled by a cause outside Heap: store (the job store or request bucket refuses writes; batches are kept and retried), schedule (the recheck schedule is missing).",
		}, []string{"cause"}),
		storeRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "heapdel_store_retries_total",
			Help: "Job-store or status-event writes retried after Heap had accepted a batch (never resubmitted).",
		}),
		reconciled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_reconciled_total",
			Help: "Jobs repaired by reconciliation: refollowed (processing but its Heap request no longer followed), orphaned_claim (claimed by a command no longer in the stream), missing_job (a followed Heap request member without a job record).",
		}, []string{"what"}),
		jobsStuck: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "heapdel_jobs_stuck",
			Help: "Jobs found at the last reconciliation that wait for a person: held (Heap answered 2xx without a deletion request id), orphaned (claimed by a command no longer in the stream; waits for a re-send).",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.commands, m.statusEvents, m.jobsPending, m.oldestPending,
		m.duration, m.batches, m.heapFailures, m.credsRejected, m.rechecks, m.ticks, m.ready, m.backlog,
		m.redeliveries, m.pendingRequests, m.deadlineDue, m.deadlineBreach, m.completedLate, m.tickDuration, m.rollups,
		m.stalled, m.storeRetries, m.reconciled, m.jobsStuck} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("consumer: metrics already registered (one Service per registry): %w", err)
			}
			return nil, fmt.Errorf("consumer: register metrics: %w", err)
		}
	}
	for _, o := range []string{"accepted", "duplicate", "invalid"} {
		m.commands.WithLabelValues(o)
	}
	for _, st := range []string{"submitted", "processing", "complete", "failed"} {
		m.statusEvents.WithLabelValues(st)
	}
	for _, c := range []string{causeStore, causeSchedule} {
		m.stalled.WithLabelValues(c)
	}
	for _, w := range []string{repairRefollowed, repairOrphanedClaim, repairMissingJob} {
		m.reconciled.WithLabelValues(w)
	}
	for _, r := range []string{stateHeld, "orphaned"} {
		m.jobsStuck.WithLabelValues(r)
	}
	for _, k := range []string{"retryable", "rejected", "unauthorized", "unreadable", "other"} {
		m.heapFailures.WithLabelValues(k)
	}
	for _, r := range []string{"pending", "complete", "not_found", "timeout", "error"} {
		m.rechecks.WithLabelValues(r)
	}
	return m, nil
}
