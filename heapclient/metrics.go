package heapclient

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values. No label ever holds an id, an identity or a secret.
const (
	epAuth     = "auth_token"
	epDeletion = "user_deletion"
	epStatus   = "deletion_status"

	reasonRateLimited  = "rate_limited"
	reasonServerError  = "server_error"
	reasonNetwork      = "network"
	reasonTimeout      = "timeout"
	reasonTokenExpired = "token_expired"

	fetchOK       = "ok"
	fetchRejected = "rejected"
	fetchError    = "error"
)

type metrics struct {
	requests *prometheus.CounterVec   // endpoint, code
	duration *prometheus.HistogramVec // endpoint
	batch    prometheus.Histogram
	retries  *prometheus.CounterVec // endpoint, reason
	tokens   *prometheus.CounterVec // result

	retryAfterClamped *prometheus.CounterVec // endpoint
}

// newMetrics builds the client's metrics and registers them on reg, if not nil.
// Metrics that reg already holds (a second Client on the same registry) are
// shared rather than refused.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_heap_requests_total",
			Help: "HTTP requests to Heap by endpoint and status code (\"error\" when no HTTP answer came).",
		}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "heapdel_heap_request_duration_seconds",
			Help:    "Duration of one HTTP request to Heap, by endpoint.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"endpoint"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "heapdel_heap_batch_users",
			Help:    "Users per deletion request that Heap accepted.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000},
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_heap_retries_total",
			Help: "Retried Heap requests by endpoint and reason.",
		}, []string{"endpoint", "reason"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_heap_token_fetches_total",
			Help: "Heap access token fetches by result (ok, rejected, error).",
		}, []string{"result"}),
		retryAfterClamped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "heapdel_heap_retry_after_clamped_total",
			Help: "Heap answers whose Retry-After asked for a longer wait than the client's MaxRetryAfter (default 5m), waited as MaxRetryAfter instead, by endpoint.",
		}, []string{"endpoint"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.batch, err = register(reg, m.batch); err != nil {
		return nil, err
	}
	if m.retries, err = register(reg, m.retries); err != nil {
		return nil, err
	}
	if m.tokens, err = register(reg, m.tokens); err != nil {
		return nil, err
	}
	if m.retryAfterClamped, err = register(reg, m.retryAfterClamped); err != nil {
		return nil, err
	}
	for _, r := range []string{fetchOK, fetchRejected, fetchError} {
		m.tokens.WithLabelValues(r)
	}
	// Zero series from the start, so dashboards and rate() alerts see them before
	// the first retry.
	for _, ep := range []string{epAuth, epDeletion, epStatus} {
		m.retryAfterClamped.WithLabelValues(ep)
		for _, r := range []string{reasonRateLimited, reasonServerError, reasonNetwork, reasonTimeout} {
			m.retries.WithLabelValues(ep, r)
		}
	}
	m.retries.WithLabelValues(epDeletion, reasonTokenExpired)
	m.retries.WithLabelValues(epStatus, reasonTokenExpired)
	return m, nil
}

func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("heapclient config: Registerer: %w", err)
}
