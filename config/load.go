package config

import (
	"errors"
	"flag"
)

// Loader reads a [Config] from flags and environment variables. Build it with
// [NewLoader] before parsing the flags, and call [Loader.Load] after.
type Loader struct {
	fs       *flag.FlagSet
	getenv   func(string) string
	set      Set
	settings []setting
	flags    map[string]*flagValue // by environment variable
}

// NewLoader registers on fs one flag per setting in set, and returns the Loader
// that reads them. The caller may add its own flags to fs, then parses it. A nil
// getenv means no environment variables. It panics, as [flag.FlagSet.Var] does,
// when fs already has a flag of the same name.
func NewLoader(fs *flag.FlagSet, getenv func(string) string, set Set) *Loader {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	l := &Loader{fs: fs, getenv: getenv, set: set, flags: map[string]*flagValue{}}
	for _, s := range settings() {
		if !set.includes(s) {
			continue
		}
		if set == SetNATS {
			// Commands that only talk to NATS never start a server of their own.
			switch s.env {
			case "HEAPDEL_DATA_DIR":
				continue
			case "HEAPDEL_NATS_URL":
				s.usage = "NATS server URLs, comma-separated (nats://, tls://, ws://, wss://); empty means nats://127.0.0.1:4222, the embedded server of a local heapdel run or demo"
			}
		}
		v := &flagValue{isBool: s.isBool, secret: s.secret}
		fs.Var(v, flagName(s.env), s.help())
		l.settings = append(l.settings, s)
		l.flags[s.env] = v
	}
	return l
}

// Load returns the configuration, call it after the flags are parsed. Each
// setting comes from its flag if given, else its environment variable if
// non-empty, else [Default]. Load reads the key files, derives the identity
// hash key when none is given, and validates the settings of its [Set]. The
// error has one line per invalid setting, naming the variable (and the flag,
// when one was used); the Config is returned as far as it could be read.
func (l *Loader) Load() (Config, error) {
	c := Default()
	var errs []*settingError
	bad := map[string]bool{} // unreadable settings, not to be reported twice
	fail := func(env string, err error) {
		errs = append(errs, &settingError{vars: []string{env}, reason: err.Error()})
		bad[env] = true
	}
	for _, s := range l.settings {
		v, ok := l.lookup(s.env)
		if !ok {
			continue
		}
		if err := s.parse(&c, v); err != nil {
			fail(s.env, err)
		}
	}

	if l.set == SetAll {
		if c.HeapAPIKeyFile != "" && c.HeapAPIKey == "" {
			key, err := readKeyFile(c.HeapAPIKeyFile)
			if err != nil {
				fail("HEAPDEL_HEAP_API_KEY_FILE", err)
			} else {
				c.HeapAPIKey, c.apiKeyFrom = key, c.HeapAPIKeyFile
			}
		}
		if c.IdentityHashKeyFile != "" && c.IdentityHashKey == "" {
			key, err := readKeyFile(c.IdentityHashKeyFile)
			if err != nil {
				fail("HEAPDEL_IDENTITY_HASH_KEY_FILE", err)
			} else {
				c.IdentityHashKey, c.hashKeyFrom = key, c.IdentityHashKeyFile
			}
		}
		if c.IdentityHashKey == "" && c.IdentityHashKeyFile == "" && c.HeapAPIKey != "" {
			c.IdentityHashKey, c.hashKeyDerived = deriveHashKey(c.HeapAPIKey), true
		}
	}

	for _, e := range c.validate(l.set) {
		if !e.involves(bad) {
			errs = append(errs, e)
		}
	}
	if len(errs) == 0 {
		return c, nil
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = errors.New(e.format(l.flagged))
	}
	return c, errors.Join(all...)
}

// lookup returns a setting's raw value: its flag's if given, else the
// environment's if non-empty.
func (l *Loader) lookup(env string) (string, bool) {
	if f := l.flags[env]; f != nil && f.set {
		return f.value, true
	}
	if v := l.getenv(env); v != "" {
		return v, true
	}
	return "", false
}

func (l *Loader) flagged(env string) bool {
	f := l.flags[env]
	return f != nil && f.set
}

// flagValue holds a flag's text unparsed, so that Load parses flag and
// environment values alike and reports either by the variable's name.
type flagValue struct {
	value  string
	set    bool
	isBool bool
	secret bool
}

func (v *flagValue) String() string {
	if v == nil || (v.secret && v.value != "") {
		return "" // never show a secret; also keeps PrintDefaults free of "(default …)"
	}
	return v.value
}

func (v *flagValue) Set(s string) error { v.value, v.set = s, true; return nil }

// IsBoolFlag lets a boolean setting's flag stand alone: --provision.
func (v *flagValue) IsBoolFlag() bool { return v.isBool }
