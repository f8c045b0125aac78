package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// testSeed is the user nkey seed from nats.go's README; testCreds is the
// chained credentials file from nats.go's tests. Both are public test values.
const (
	testSeed  = "SUAGMJH5XLGZKQQWAWKRZJIGMOU4HPFUYLXJMXOO5NLFEO2OOQJ5LPRDPM"
	testCreds = `-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJqd3QiLCJhbGciOiJlZDI1NTE5In0.eyJqdGkiOiJBSFQzRzNXRElDS1FWQ1FUWFJUTldPRlVVUFRWNE00RFZQV0JGSFpJQUROWEZIWEpQR0FBIiwiaWF0IjoxNTQ0MDcxODg5LCJpc3MiOiJBQVBRSlFVUEtWWEdXNUNaSDVHMkhGSlVMWVNLREVMQVpSVldKQTI2VkRaTzdXU0JVTklZUkZOUSIsInN1YiI6IlVBVDZCV0NTQ1dMVUtKVDZLNk1CSkpPRU9UWFo1QUpET1lLTkVWUkZDN1ZOTzZPQTQzTjRUUk5PIiwidHlwZSI6InVzZXIiLCJuYXRzIjp7InB1YiI6e30sInN1YiI6e319fQ._8A1XM88Q2kp7XVJZ42bQuO9E3QPsNAGKtVjAkDycj8A5PtRPby9UpqBUZzBwiJQQO3TUcD5GGqSvsMm6X8hCQ
------END NATS USER JWT------

-----BEGIN USER NKEY SEED-----
SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY
------END USER NKEY SEED------
`
)

// startServer runs an in-process NATS server configured by opts.
func startServer(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

func connect(t *testing.T, url string, c Config) error {
	t.Helper()
	opts, err := c.NATSOptions()
	if err != nil {
		t.Fatalf("NATSOptions: %v", err)
	}
	nc, err := nats.Connect(url, append(opts, nats.NoReconnect(), nats.Timeout(5*time.Second))...)
	if err != nil {
		return err
	}
	nc.Close()
	return nil
}

func TestNATSOptionsAuth(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		opts, err := Default().NATSOptions()
		if err != nil || len(opts) != 0 {
			t.Errorf("NATSOptions() = %d options, %v", len(opts), err)
		}
	})
	t.Run("token", func(t *testing.T) {
		url := startServer(t, &server.Options{Authorization: "tok-123"})
		c := Default()
		c.NATSToken = "tok-123"
		if err := connect(t, url, c); err != nil {
			t.Errorf("connect with token: %v", err)
		}
		c.NATSToken = "wrong"
		if err := connect(t, url, c); err == nil {
			t.Error("connected with a wrong token")
		}
	})
	t.Run("user and password", func(t *testing.T) {
		url := startServer(t, &server.Options{Username: "alice", Password: "pw-456"})
		c := Default()
		c.NATSUser, c.NATSPassword = "alice", "pw-456"
		if err := connect(t, url, c); err != nil {
			t.Errorf("connect with user and password: %v", err)
		}
	})
	t.Run("nkey", func(t *testing.T) {
		seed := writeFile(t, "user.nk", testSeed+"\n")
		c := Default()
		c.NATSNKey = seed
		opts, err := c.NATSOptions()
		if err != nil || len(opts) != 1 {
			t.Fatalf("NATSOptions = %d options, %v", len(opts), err)
		}
		var o nats.Options
		if err := opts[0](&o); err != nil {
			t.Fatal(err)
		}
		url := startServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: o.Nkey}}})
		if err := connect(t, url, c); err != nil {
			t.Errorf("connect with nkey: %v", err)
		}
	})
	t.Run("creds", func(t *testing.T) {
		c := Default()
		c.NATSCreds = writeFile(t, "user.creds", testCreds)
		if opts, err := c.NATSOptions(); err != nil || len(opts) != 1 {
			t.Errorf("NATSOptions = %d options, %v", len(opts), err)
		}
	})
}

func TestNATSOptionsErrorsNameVariable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	garbage := writeFile(t, "garbage", "not a key\n")
	ca, cert, _ := writeTLS(t)
	tests := []struct {
		name string
		set  func(c *Config)
		want string
	}{
		{"creds missing", func(c *Config) { c.NATSCreds = missing }, "HEAPDEL_NATS_CREDS: cannot read the file"},
		{"creds garbage", func(c *Config) { c.NATSCreds = garbage }, "HEAPDEL_NATS_CREDS: "},
		{"nkey missing", func(c *Config) { c.NATSNKey = missing }, "HEAPDEL_NATS_NKEY: "},
		{"nkey garbage", func(c *Config) { c.NATSNKey = garbage }, "HEAPDEL_NATS_NKEY: "},
		{"ca missing", func(c *Config) { c.NATSTLSCA = missing }, "HEAPDEL_NATS_TLS_CA: "},
		{"ca garbage", func(c *Config) { c.NATSTLSCA = garbage }, "HEAPDEL_NATS_TLS_CA: "},
		{"cert without key", func(c *Config) { c.NATSTLSCert = cert }, "HEAPDEL_NATS_TLS_CERT / HEAPDEL_NATS_TLS_KEY: set both or neither"},
		{"key missing", func(c *Config) { c.NATSTLSCert, c.NATSTLSKey = cert, missing }, "HEAPDEL_NATS_TLS_CERT / HEAPDEL_NATS_TLS_KEY: "},
		{"key not matching", func(c *Config) { c.NATSTLSCert, c.NATSTLSKey = cert, ca }, "HEAPDEL_NATS_TLS_CERT / HEAPDEL_NATS_TLS_KEY: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.set(&c)
			_, err := c.NATSOptions()
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("NATSOptions error %v, want one starting %q", err, tt.want)
			}
		})
	}
}

func TestNATSOptionsTLS(t *testing.T) {
	ca, cert, key := writeTLS(t)
	serverCert, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	url := startServer(t, &server.Options{
		TLS:       true,
		TLSVerify: true, // the server asks for the client certificate
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{serverCert},
			ClientCAs:    caPool(t, ca),
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
	})
	c := Default()
	c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey = ca, cert, key
	if errs := c.validate(SetNATS); len(errs) != 0 {
		t.Errorf("validate: %v", errs)
	}
	if err := connect(t, url, c); err != nil {
		t.Errorf("connect with TLS CA and client certificate: %v", err)
	}
	c.NATSTLSCert, c.NATSTLSKey = "", ""
	if err := connect(t, url, c); err == nil {
		t.Error("connected without the client certificate")
	}
}

// writeTLS writes a CA and a certificate it signed, for 127.0.0.1, usable by
// server and client, and returns the three PEM files.
func writeTLS(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "heapdel test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caTmpl, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	return writeFile(t, "ca.pem", pemOf("CERTIFICATE", caDER)),
		writeFile(t, "cert.pem", pemOf("CERTIFICATE", leafDER)),
		writeFile(t, "key.pem", pemOf("PRIVATE KEY", keyDER))
}

func caPool(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	var o nats.Options
	if err := nats.RootCAs(caFile)(&o); err != nil {
		t.Fatal(err)
	}
	pool, err := o.RootCAsCB()
	if err != nil {
		t.Fatal(err)
	}
	return pool
}
