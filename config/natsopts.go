package config

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// NATSOptions returns the nats.go options for the configured credentials and
// TLS: a creds file, an nkey seed file, user and password, or a token, plus the
// CA bundle and client certificate. It reads the files now, so that an
// unreadable or malformed one is an error naming its variable rather than a
// failure at connect time. It does not check that only one authentication
// method is set; [Config.Validate] does.
func (c Config) NATSOptions() ([]nats.Option, error) {
	var opts []nats.Option
	// try applies opt to scratch options, where nats.go reads the files.
	try := func(env string, opt nats.Option) error {
		var o nats.Options
		if err := opt(&o); err != nil {
			return fmt.Errorf("%s: %w", env, err)
		}
		opts = append(opts, opt)
		return nil
	}

	if c.NATSCreds != "" {
		if err := checkReadable(c.NATSCreds); err != nil {
			return nil, fmt.Errorf("HEAPDEL_NATS_CREDS: %w", err)
		}
		opt := nats.UserCredentials(c.NATSCreds)
		var o nats.Options
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("HEAPDEL_NATS_CREDS: %w", err)
		}
		if _, err := o.UserJWT(); err != nil { // reads and parses the JWT
			return nil, fmt.Errorf("HEAPDEL_NATS_CREDS: %w", err)
		}
		if _, err := o.SignatureCB([]byte("heapdel")); err != nil { // reads the seed
			return nil, fmt.Errorf("HEAPDEL_NATS_CREDS: %w", err)
		}
		opts = append(opts, opt)
	}
	if c.NATSNKey != "" {
		opt, err := nats.NkeyOptionFromSeed(c.NATSNKey)
		if err != nil {
			return nil, fmt.Errorf("HEAPDEL_NATS_NKEY: %w", err)
		}
		opts = append(opts, opt)
	}
	if c.NATSUser != "" || c.NATSPassword != "" {
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	}
	if c.NATSToken != "" {
		opts = append(opts, nats.Token(c.NATSToken))
	}
	if c.NATSTLSCA != "" {
		if err := try("HEAPDEL_NATS_TLS_CA", nats.RootCAs(c.NATSTLSCA)); err != nil {
			return nil, err
		}
	}
	if c.NATSTLSCert != "" || c.NATSTLSKey != "" {
		if c.NATSTLSCert == "" || c.NATSTLSKey == "" {
			return nil, fmt.Errorf("HEAPDEL_NATS_TLS_CERT / HEAPDEL_NATS_TLS_KEY: set both or neither")
		}
		if err := try("HEAPDEL_NATS_TLS_CERT / HEAPDEL_NATS_TLS_KEY", nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey)); err != nil {
			return nil, err
		}
	}
	return opts, nil
}
