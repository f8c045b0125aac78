package heapclient

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// MaxUsers is the most users Heap accepts in one deletion request.
const MaxUsers = 10000

// DefaultBaseURL is Heap's API host, for both US and EU data centres.
const DefaultBaseURL = "https://heapanalytics.com"

// Config configures a [Client]. Zero fields take the defaults noted.
type Config struct {
	BaseURL        string        // default DefaultBaseURL; http:// only for loopback hosts
	AppID, APIKey  string        // required: the Main Production environment id and its API key
	TokenLifetime  time.Duration // refresh a token this long after fetching it; default 4m
	RequestTimeout time.Duration // per HTTP attempt; default 30s
	Rate           float64       // requests/second across all endpoints; default 1; +Inf = unlimited
	Burst          int           // default 1
	MaxRetries     int           // retries after the first attempt; default 5 (-1 = none)
	RetryBudget    time.Duration // longest time one call spends retrying; default 1m
	MinBackoff     time.Duration // default 500ms
	MaxBackoff     time.Duration // default 30s
	// MaxRetryAfter caps every wait that Heap's Retry-After asks for (seconds or
	// HTTP date; default 5m): a Retry-After of a day or a century would park a
	// batch that long. A capped wait is counted in
	// heapdel_heap_retry_after_clamped_total and logged once per Client.
	MaxRetryAfter time.Duration
	HTTPClient    *http.Client   // default: own client with tuned, reused transport
	Logger        zerolog.Logger // zero value = no logging
	Registerer    prometheus.Registerer
}

// withDefaults returns c with every zero field set to its default: the one place
// defaults live.
func (c Config) withDefaults() Config {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	if c.TokenLifetime == 0 {
		c.TokenLifetime = 4 * time.Minute
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.Rate == 0 {
		c.Rate = 1
	}
	if c.Burst == 0 {
		c.Burst = 1
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 5
	}
	if c.RetryBudget == 0 {
		c.RetryBudget = time.Minute
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = 5 * time.Minute
	}
	return c
}

// Validate reports the first invalid field of c, with zero fields read as their
// defaults. The error names the field, never its value.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, err := parseBaseURL(c.BaseURL); err != nil {
		return err
	}
	switch {
	case c.AppID == "":
		return errors.New("heapclient config: AppID is required")
	case c.APIKey == "":
		return errors.New("heapclient config: APIKey is required")
	case c.TokenLifetime < 0:
		return errors.New("heapclient config: TokenLifetime must not be negative")
	case c.RequestTimeout < 0:
		return errors.New("heapclient config: RequestTimeout must not be negative")
	case math.IsNaN(c.Rate) || c.Rate < 0:
		return errors.New("heapclient config: Rate must be a positive number of requests per second")
	case c.Burst < 0:
		return errors.New("heapclient config: Burst must not be negative")
	case c.MaxRetries < -1:
		return errors.New("heapclient config: MaxRetries must be -1 (none) or more")
	case c.RetryBudget < 0:
		return errors.New("heapclient config: RetryBudget must not be negative")
	case c.MinBackoff < 0:
		return errors.New("heapclient config: MinBackoff must not be negative")
	case c.MaxBackoff < c.MinBackoff:
		return errors.New("heapclient config: MaxBackoff must not be less than MinBackoff")
	case c.MaxRetryAfter < 0:
		return errors.New("heapclient config: MaxRetryAfter must not be negative")
	}
	return nil
}

// parseBaseURL checks a base URL and returns it without a trailing slash. Its
// errors never quote the URL, which might hold credentials.
func parseBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("heapclient config: BaseURL is not a valid URL")
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return "", errors.New("heapclient config: BaseURL must be an https:// URL")
	case u.Host == "":
		return "", errors.New("heapclient config: BaseURL has no host")
	case u.User != nil:
		return "", errors.New("heapclient config: BaseURL must not hold credentials")
	case u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("heapclient config: BaseURL must not have a query or fragment")
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return "", errors.New("heapclient config: BaseURL may use plain http:// only for a loopback host")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Client talks to Heap's User Deletion API. It is safe for concurrent use: its
// callers share one token, one rate limiter and one connection pool.
type Client struct {
	cfg     Config
	base    string
	hc      *http.Client
	limiter *rate.Limiter
	log     zerolog.Logger
	m       *metrics
	tok     tokenCache
	now     func() time.Time // time.Now; tests move it

	clampLogged atomic.Bool // a capped Retry-After was logged: once per Client
}

// New returns a Client for cfg, with defaults filled in. Its error names the
// invalid Config field, or says that the metrics could not be registered.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	base, err := parseBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	limit := rate.Limit(cfg.Rate)
	if math.IsInf(cfg.Rate, 1) {
		limit = rate.Inf
	}
	return &Client{
		cfg:     cfg,
		base:    base,
		hc:      httpClient(cfg.HTTPClient),
		limiter: rate.NewLimiter(limit, cfg.Burst),
		log:     cfg.Logger,
		m:       m,
		now:     time.Now,
	}, nil
}

// httpClient returns the client to send with. It never follows redirects: a
// redirect could carry the token somewhere unintended, and Heap documents none.
func httpClient(given *http.Client) *http.Client {
	var hc http.Client
	if given != nil {
		hc = *given
	} else {
		var tr *http.Transport
		if dt, ok := http.DefaultTransport.(*http.Transport); ok {
			tr = dt.Clone()
		} else {
			tr = &http.Transport{Proxy: http.ProxyFromEnvironment}
		}
		tr.MaxIdleConns = 32
		tr.MaxIdleConnsPerHost = 8
		tr.IdleConnTimeout = 90 * time.Second
		tr.ForceAttemptHTTP2 = true
		hc.Transport = tr
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// errorf is fmt.Errorf with the endpoint prefix every error of this package has.
func errorf(endpoint, format string, args ...any) error {
	return fmt.Errorf("heap "+endpoint+": "+format, args...)
}
