package heapclient

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestConfig(t *testing.T) {
	ok := func(c *Config) {}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // a field name; "" = valid
	}{
		{"defaults", ok, ""},
		{"https", func(c *Config) { c.BaseURL = "https://heap.example.com/" }, ""},
		{"http loopback v4", func(c *Config) { c.BaseURL = "http://127.0.0.1:8080" }, ""},
		{"http loopback 127/8", func(c *Config) { c.BaseURL = "http://127.9.9.9" }, ""},
		{"http loopback v6", func(c *Config) { c.BaseURL = "http://[::1]:9" }, ""},
		{"http localhost", func(c *Config) { c.BaseURL = "http://LocalHost:1" }, ""},
		{"http remote", func(c *Config) { c.BaseURL = "http://heapanalytics.com" }, "BaseURL"},
		{"http remote IP", func(c *Config) { c.BaseURL = "http://10.0.0.1" }, "BaseURL"},
		{"http lookalike", func(c *Config) { c.BaseURL = "http://localhost.evil.com" }, "BaseURL"},
		{"other scheme", func(c *Config) { c.BaseURL = "ftp://x" }, "BaseURL"},
		{"no host", func(c *Config) { c.BaseURL = "https://" }, "BaseURL"},
		{"credentials", func(c *Config) { c.BaseURL = "https://u:secret-pw@heap.example.com" }, "BaseURL"},
		{"query", func(c *Config) { c.BaseURL = "https://heap.example.com?x=1" }, "BaseURL"},
		{"garbage", func(c *Config) { c.BaseURL = "://\x7f" }, "BaseURL"},
		{"no app", func(c *Config) { c.AppID = "" }, "AppID"},
		{"no key", func(c *Config) { c.APIKey = "" }, "APIKey"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "Rate"},
		{"NaN rate", func(c *Config) { c.Rate = math.NaN() }, "Rate"},
		{"unlimited rate", func(c *Config) { c.Rate = math.Inf(1) }, ""},
		{"negative burst", func(c *Config) { c.Burst = -1 }, "Burst"},
		{"no retries", func(c *Config) { c.MaxRetries = -1 }, ""},
		{"bad retries", func(c *Config) { c.MaxRetries = -2 }, "MaxRetries"},
		{"negative timeout", func(c *Config) { c.RequestTimeout = -1 }, "RequestTimeout"},
		{"negative lifetime", func(c *Config) { c.TokenLifetime = -1 }, "TokenLifetime"},
		{"negative budget", func(c *Config) { c.RetryBudget = -1 }, "RetryBudget"},
		{"negative min backoff", func(c *Config) { c.MinBackoff = -1 }, "MinBackoff"},
		{"max below min", func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }, "MaxBackoff"},
		{"negative max Retry-After", func(c *Config) { c.MaxRetryAfter = -1 }, "MaxRetryAfter"},
		{"short max Retry-After", func(c *Config) { c.MaxRetryAfter = time.Second }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{AppID: "app", APIKey: "the-key-SECRET"}
			tt.edit(&cfg)
			c, err := New(cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if !strings.HasPrefix(c.base, "http") || strings.HasSuffix(c.base, "/") {
					t.Errorf("base URL %q", c.base)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "secret-pw") {
				t.Errorf("error %q leaks a secret", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := New(Config{AppID: "a", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	got := c.cfg
	want := Config{BaseURL: DefaultBaseURL, AppID: "a", APIKey: "k", TokenLifetime: 4 * time.Minute,
		RequestTimeout: 30 * time.Second, Rate: 1, Burst: 1, MaxRetries: 5, RetryBudget: time.Minute,
		MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second}
	if got.BaseURL != want.BaseURL || got.TokenLifetime != want.TokenLifetime || got.RequestTimeout != want.RequestTimeout ||
		got.Rate != want.Rate || got.Burst != want.Burst || got.MaxRetries != want.MaxRetries || got.RetryBudget != want.RetryBudget ||
		got.MinBackoff != want.MinBackoff || got.MaxBackoff != want.MaxBackoff || got.MaxRetryAfter != 5*time.Minute {
		t.Errorf("defaults: %+v", got)
	}
	if c.limiter.Limit() != 1 || c.limiter.Burst() != 1 {
		t.Errorf("limiter %v/%d", c.limiter.Limit(), c.limiter.Burst())
	}
	if c.hc.CheckRedirect == nil {
		t.Error("redirects are followed")
	}
}

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Something else already holds one of the names with another shape.
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "heapdel_heap_batch_users", Help: "x"}))
	if _, err := New(Config{AppID: "a", APIKey: "k", Registerer: reg}); err == nil || !strings.Contains(err.Error(), "Registerer") {
		t.Errorf("got %v, want a Registerer error", err)
	}
}

func TestUserMarshalJSON(t *testing.T) {
	tests := []struct {
		user User
		want string
	}{
		{User{UserID: 1}, `{"user_id":1}`},
		{User{UserID: math.MaxInt64}, `{"user_id":9223372036854775807}`},
		{User{UserID: math.MaxUint64}, `{"user_id":18446744073709551615}`},
		{User{Identity: "a@example.com", UserID: 5}, `{"identity":"a@example.com"}`},
		{User{Identity: "q\"b\\s\n\r\t\x01<>&\u2028\u2029é"}, `{"identity":"q\"b\\s\n\r\t\u0001<>&\u2028\u2029é"}`},
		{User{Identity: "bad\xffutf8"}, `{"identity":"bad\ufffdutf8"}`},
	}
	for _, tt := range tests {
		got, err := tt.user.MarshalJSON()
		if err != nil || string(got) != tt.want {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", tt.user, got, err, tt.want)
			continue
		}
		// It reads back as the same value, and as an exact integer.
		dec := json.NewDecoder(bytes.NewReader(got))
		dec.UseNumber()
		var back map[string]any
		if err := dec.Decode(&back); err != nil {
			t.Fatalf("%s does not decode: %v", got, err)
		}
		if tt.user.Identity != "" && tt.user.Identity == strings.ToValidUTF8(tt.user.Identity, "\uFFFD") && back["identity"] != tt.user.Identity {
			t.Errorf("identity %q read back as %q", tt.user.Identity, back["identity"])
		}
		if tt.user.Identity == "" && back["user_id"].(json.Number).String() != strings.TrimSuffix(strings.TrimPrefix(tt.want, `{"user_id":`), "}") {
			t.Errorf("user id read back as %v", back["user_id"])
		}
	}
}
