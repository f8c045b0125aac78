package heapclient

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
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
	AppID, APIKey  string        // required: the Main Production environment id and its API key (or APIKeyFile)
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
	// APIKeyFile, when set, is a file holding the API key (surrounding white
	// space trimmed), such as a mounted Kubernetes Secret; APIKey is then
	// ignored. New reads it, and the client reads it again when auth_token
	// answers 401, at most once per 10 s, and retries the token fetch once if
	// the key changed: a rotated key is picked up without a restart.
	APIKeyFile string
	HTTPClient *http.Client   // default: own client with tuned, reused transport
	Logger     zerolog.Logger // zero value = no logging
	Registerer prometheus.Registerer
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
	case c.APIKey == "" && c.APIKeyFile == "":
		return errors.New("heapclient config: APIKey or APIKeyFile is required")
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
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		return "", errors.New("heapclient config: BaseURL may use plain http:// only for a loopback host")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// IsLoopbackHost says whether host is "localhost" or a loopback IP address: the only
// hosts plain http may reach, since the Heap simulator is the only Heap without TLS.
func IsLoopbackHost(host string) bool {
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

	keyMu   sync.Mutex
	key     string    // the API key in use: APIKey, or APIKeyFile's
	keyRead time.Time // when APIKeyFile was last read

	clampLogged atomic.Bool // a capped Retry-After was logged: once per Client
}

// New returns a Client for cfg, with defaults filled in. Its error names the
// invalid Config field (APIKeyFile if it cannot be read or is empty, never
// quoting its contents), or says that the metrics could not be registered.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	base, err := parseBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	key := cfg.APIKey
	if cfg.APIKeyFile != "" {
		if key, err = readKeyFile(cfg.APIKeyFile); err != nil {
			return nil, err
		}
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
		key:     key,
		keyRead: time.Now(),
	}, nil
}

// keyRereadInterval is the shortest time between two reads of APIKeyFile: a
// burst of 401s reads it once.
const keyRereadInterval = 10 * time.Second

// readKeyFile returns the trimmed contents of an API key file. Its error names
// the file, never its contents.
func readKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named below
		}
		return "", fmt.Errorf("heapclient config: APIKeyFile %s cannot be read: %w", path, err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("heapclient config: APIKeyFile %s is empty", path)
	}
	return key, nil
}

// apiKey returns the API key in use.
func (c *Client) apiKey() string {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	return c.key
}

// rereadKey reads APIKeyFile again after auth_token refused the key, unless it
// was read less than keyRereadInterval ago, and reports whether it now holds
// another key: a Secret rotated in place is picked up without a restart. It
// never logs the key.
func (c *Client) rereadKey() bool {
	if c.cfg.APIKeyFile == "" {
		return false
	}
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	now := c.now()
	if now.Sub(c.keyRead) < keyRereadInterval {
		return false
	}
	c.keyRead = now
	key, err := readKeyFile(c.cfg.APIKeyFile)
	switch {
	case err != nil:
		c.log.Warn().Err(err).Msg("heap refused the API key, and the key file could not be read again")
		return false
	case key == c.key:
		c.log.Debug().Msg("heap refused the API key; the key file still holds the same key")
		return false
	}
	c.key = key
	c.log.Info().Str("file", c.cfg.APIKeyFile).Msg("heap refused the API key; the key file holds a new one, fetching a token with it")
	return true
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
