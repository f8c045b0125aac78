package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// settingError is one invalid setting (or a combination of settings). Its text
// names the variables, and the flags when a flag was used, then what is wrong.
type settingError struct {
	vars   []string
	refs   []string // other variables the rule compared against, not named
	reason string
}

func (e *settingError) Error() string { return e.format(nil) }

// format renders the error as one line; flagged reports whether a variable's
// value came from its flag, which is then named beside it.
func (e *settingError) format(flagged func(env string) bool) string {
	names := make([]string, len(e.vars))
	for i, v := range e.vars {
		names[i] = v
		if flagged != nil && flagged(v) {
			names[i] += " (--" + flagName(v) + ")"
		}
	}
	// A reason never spans lines: the caller prints one line per setting.
	reason := strings.ReplaceAll(e.reason, "\n", " ")
	return strings.Join(names, " / ") + ": " + reason
}

// involves reports whether the error names, or depends on, any of vars.
func (e *settingError) involves(vars map[string]bool) bool {
	for _, v := range slices.Concat(e.vars, e.refs) {
		if vars[v] {
			return true
		}
	}
	return false
}

// Set selects which settings a [Loader] registers and validates.
type Set int

const (
	// SetAll is every setting: what `heapdel run` needs.
	SetAll Set = iota
	// SetNATS is only the NATS connection (URLs, credentials, TLS, data
	// directory), the subject prefix and logging: what `heapdel publish` and
	// `heapdel status` need.
	SetNATS
)

func (s Set) includes(st setting) bool { return s == SetAll || st.nats }

// Validate checks every setting and returns nil, or an error with one line per
// invalid setting, each naming its environment variable. It reads the files
// the configuration names, to check they are readable.
func (c Config) Validate() error {
	errs := c.validate(SetAll)
	if len(errs) == 0 {
		return nil
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

// validate returns the problems of the settings in set, one per setting or
// combination, in help order.
func (c Config) validate(set Set) []*settingError {
	var errs []*settingError
	fail := func(reason string, vars ...string) {
		errs = append(errs, &settingError{vars: vars, reason: reason})
	}
	for _, s := range settings() {
		if !set.includes(s) || s.check == nil {
			continue
		}
		if err := s.check(&c); err != nil {
			fail(err.Error(), s.env)
		}
	}

	// NATS: one authentication method, and pairs given together.
	var auth []string
	if c.NATSCreds != "" {
		auth = append(auth, "HEAPDEL_NATS_CREDS")
	}
	if c.NATSNKey != "" {
		auth = append(auth, "HEAPDEL_NATS_NKEY")
	}
	if c.NATSUser != "" || c.NATSPassword != "" {
		auth = append(auth, "HEAPDEL_NATS_USER")
	}
	if c.NATSToken != "" {
		auth = append(auth, "HEAPDEL_NATS_TOKEN")
	}
	if len(auth) > 1 {
		fail("use one NATS authentication method (creds, nkey, user and password, or token), not several", auth...)
	}
	if (c.NATSUser == "") != (c.NATSPassword == "") {
		fail("set both or neither", "HEAPDEL_NATS_USER", "HEAPDEL_NATS_PASSWORD")
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		fail("set both or neither", "HEAPDEL_NATS_TLS_CERT", "HEAPDEL_NATS_TLS_KEY")
	}
	if set != SetAll {
		return errs
	}

	// Heap API key: exactly one of the key and its file. A key that Load read
	// from the file is not a second one.
	switch {
	case c.HeapAPIKey == "" && c.HeapAPIKeyFile == "":
		fail("the Heap API key is required: set one of these", "HEAPDEL_HEAP_API_KEY", "HEAPDEL_HEAP_API_KEY_FILE")
	case c.HeapAPIKey != "" && c.HeapAPIKeyFile != "" && c.apiKeyFrom != c.HeapAPIKeyFile:
		fail("set one of these, not both", "HEAPDEL_HEAP_API_KEY", "HEAPDEL_HEAP_API_KEY_FILE")
	}
	if c.IdentityHashKey != "" && c.IdentityHashKeyFile != "" && c.hashKeyFrom != c.IdentityHashKeyFile {
		fail("set one of these, not both", "HEAPDEL_IDENTITY_HASH_KEY", "HEAPDEL_IDENTITY_HASH_KEY_FILE")
	}
	if c.RecheckInterval > 0 && c.PollMaxInterval > 0 && c.PollMaxInterval < c.RecheckInterval {
		errs = append(errs, &settingError{
			vars: []string{"HEAPDEL_POLL_MAX_INTERVAL"}, refs: []string{"HEAPDEL_RECHECK_INTERVAL"},
			reason: fmt.Sprintf("must be at least HEAPDEL_RECHECK_INTERVAL (%s), got %q",
				formatDuration(c.RecheckInterval), formatDuration(c.PollMaxInterval)),
		})
	}
	return errs
}
