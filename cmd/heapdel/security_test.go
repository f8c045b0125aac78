package main

// The security suite: NATS over TLS, every NATS authentication kind SPEC.md lists,
// the least NATS permissions heapdel needs (read from docs/nats-permissions.md, so
// the documented sets are the proven ones), the Heap API key read from a file and
// the plain-http rule for the Heap base URL. Like the rest of this package, it
// starts heapdel in-process through run and speaks to it only through NATS, HTTP
// and its output.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// serverLog keeps what a test NATS server reports as errors (permission
// violations among them) and, when the server traces, what each user published
// and subscribed to.
type serverLog struct {
	mu    sync.Mutex
	lines []string
	used  map[string]map[string]bool // user → "pub <subject>" / "sub <subject>"
}

func (l *serverLog) add(format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

func (l *serverLog) Noticef(string, ...any)         {}
func (l *serverLog) Warnf(string, ...any)           {}
func (l *serverLog) Debugf(string, ...any)          {}
func (l *serverLog) Errorf(format string, v ...any) { l.add(format, v) }
func (l *serverLog) Fatalf(format string, v ...any) { l.add(format, v) }

// traceOp is a client's publication or subscription in the server's trace:
// `… - "$G/user:heapdel" - <<- [HPUB $JS.API.INFO …]`.
var traceOp = regexp.MustCompile(`user:([^"\s]+)" - <<- \[(PUB|HPUB|SUB) (\S+)`)

func (l *serverLog) Tracef(format string, v ...any) {
	m := traceOp.FindStringSubmatch(fmt.Sprintf(format, v...))
	if m == nil {
		return
	}
	kind := "pub "
	if m[2] == "SUB" {
		kind = "sub "
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.used == nil {
		l.used = map[string]map[string]bool{}
	}
	if l.used[m[1]] == nil {
		l.used[m[1]] = map[string]bool{}
	}
	l.used[m[1]][kind+m[3]] = true
}

// unused returns the permissions of perms that user never exercised in the
// server's trace, leaving out those in situational.
func (l *serverLog) unused(user string, perms *server.Permissions, situational map[string]bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	check := func(kind string, allow []string) {
		for _, p := range allow {
			if situational[p] {
				continue
			}
			used := false
			for op := range l.used[user] {
				if strings.HasPrefix(op, kind) && subjectMatches(p, strings.TrimPrefix(op, kind)) {
					used = true
					break
				}
			}
			if !used {
				out = append(out, kind+p)
			}
		}
	}
	check("pub ", perms.Publish.Allow)
	check("sub ", perms.Subscribe.Allow)
	return out
}

// subjectMatches says whether a subject as a client sent it matches a permission,
// as the server decides: '*' is one token, '>' one or more at the end.
func subjectMatches(permission, subject string) bool {
	pt, st := strings.Split(permission, "."), strings.Split(subject, ".")
	for i, p := range pt {
		switch {
		case p == ">":
			return len(st) > i
		case i >= len(st), p != "*" && p != st[i]:
			return false
		}
	}
	return len(pt) == len(st)
}

// violations returns the permission violations the server saw.
func (l *serverLog) violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, "Violation") {
			out = append(out, line)
		}
	}
	return out
}

// startNATS runs a JetStream server on a free loopback port with opts (auth, TLS,
// operator mode) and records its errors.
func startNATS(t *testing.T, opts *server.Options) (*server.Server, *serverLog) {
	t.Helper()
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.JetStream = true
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	opts.NoSigs = true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	log := &serverLog{}
	srv.SetLoggerV2(log, false, opts.Trace, false)
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats server not ready within 10s")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv, log
}

// runCLI runs one heapdel command (publish, status, check…) to its end.
func runCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err = run(ctx, args, envOf(env), &out, &errb)
	return out.String(), errb.String(), err
}

// natsEnv is the NATS part of a heapdel environment: what publish and status need.
func natsEnv(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		if strings.HasPrefix(k, "HEAPDEL_NATS_") {
			out[k] = v
		}
	}
	return out
}

// withEnv returns a copy of env with the given variable, value pairs set.
func withEnv(env map[string]string, kv ...string) map[string]string {
	out := maps.Clone(env)
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// publishOne sends one deletion command through `heapdel publish`.
func publishOne(t *testing.T, env map[string]string, requestID, identity string) {
	t.Helper()
	if _, errOut, err := runCLI(t, env, "publish", "--request-id", requestID, "--identity", identity); err != nil {
		t.Fatalf("publish %s: %v\n%s", requestID, err, errOut)
	}
}

// waitJobStatus polls `heapdel status --json` until the job has status want.
func waitJobStatus(t *testing.T, env map[string]string, requestID, want string, p *program) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var out, errOut string
	var err error
	for time.Now().Before(deadline) {
		out, errOut, err = runCLI(t, env, "status", "--json", requestID)
		if err == nil && strings.Contains(out, `"status": "`+want+`"`) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	logs := ""
	if p != nil {
		logs = p.stderr.String()
	}
	t.Fatalf("job %s never %s: %v\n%s%s\nheapdel log:\n%s", requestID, want, err, out, errOut, logs)
}

// startFailure runs `heapdel run` expecting it to give up at start. It returns
// what heapdel wrote to stderr and the error run returned.
func startFailure(t *testing.T, env map[string]string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb syncBuffer
	err := guardedRun(ctx, []string{"run"}, env, &out, &errb)
	if ctx.Err() != nil {
		t.Fatalf("heapdel did not exit within 20s (it should refuse to start): %v\n%s", err, errb.String())
	}
	if err == nil {
		t.Fatalf("heapdel exited without an error\n%s", errb.String())
	}
	return errb.String(), err
}

// guardedRun is run with a panic turned into an error, so that a crash at start
// fails one test with its stack instead of the whole test binary.
func guardedRun(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("heapdel panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return run(ctx, args, envOf(env), stdout, stderr)
}

// startGuarded is startProgram with guardedRun.
func startGuarded(t *testing.T, env map[string]string) *program {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &program{cancel: cancel, done: make(chan error, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	go func() { p.done <- guardedRun(ctx, []string{"run"}, env, p.stdout, p.stderr) }()
	t.Cleanup(func() { _ = p.stop(t) })
	return p
}

// --- TLS ---

// pki is a CA with a server certificate for 127.0.0.1/localhost and a client
// certificate, as PEM files.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T, name string) pki {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := pki{ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.ca, "CERTIFICATE", caDER)
	issue := func(serial int64, cn string, server bool) (string, string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPath, keyPath := filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+"-key.pem")
		writePEM(t, certPath, "CERTIFICATE", der)
		writePEM(t, keyPath, "PRIVATE KEY", keyDER)
		return certPath, keyPath
	}
	p.serverCert, p.serverKey = issue(2, "server", true)
	p.clientCert, p.clientKey = issue(3, "heapdel", false)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsNATS runs a JetStream server that requires TLS and a client certificate
// signed by p's CA, and returns its tls:// URL.
func tlsNATS(t *testing.T, p pki) string {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.ca, Verify: true, Timeout: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := startNATS(t, &server.Options{TLSConfig: tc, TLSVerify: true, TLSTimeout: 2})
	return strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)
}

// TestNATSOverTLS runs heapdel against a server that requires TLS and a client
// certificate, with a CA and certificates made for the test: it completes a
// deletion, and publish and status work with the same settings. A CA that did not
// sign the server, or a client certificate the server refuses, stops heapdel at
// start with an error naming the setting to fix.
func TestNATSOverTLS(t *testing.T) {
	p := newPKI(t, "good")
	url := tlsNATS(t, p)
	sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key", CompleteAfter: 200 * time.Millisecond})
	defer sim.Close()
	env := withEnv(baseEnv(t, url, sim.URL),
		"HEAPDEL_NATS_TLS_CA", p.ca,
		"HEAPDEL_NATS_TLS_CERT", p.clientCert,
		"HEAPDEL_NATS_TLS_KEY", p.clientKey)

	t.Run("full run", func(t *testing.T) {
		prog := startGuarded(t, env)
		waitReady(t, env["HEAPDEL_HTTP_ADDR"], prog)
		publishOne(t, natsEnv(env), "tls-1", "tls-person@example.com")
		waitJobStatus(t, natsEnv(env), "tls-1", "complete", prog)
		if err := prog.stop(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})

	// Each broken TLS setting stops heapdel at start, saying which setting to fix.
	other := newPKI(t, "other")
	for _, tc := range []struct {
		name    string
		env     map[string]string
		setting string
	}{
		{"CA that did not sign the server", withEnv(env, "HEAPDEL_NATS_TLS_CA", other.ca), "HEAPDEL_NATS_TLS_CA"},
		{"client certificate the server does not trust", withEnv(env, "HEAPDEL_NATS_TLS_CERT", other.clientCert, "HEAPDEL_NATS_TLS_KEY", other.clientKey), "HEAPDEL_NATS_TLS_CERT"},
		{"no client certificate", withEnv(env, "HEAPDEL_NATS_TLS_CERT", "", "HEAPDEL_NATS_TLS_KEY", ""), "HEAPDEL_NATS_TLS_CERT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.env["HEAPDEL_HTTP_ADDR"] = freeAddr(t)
			stderr, err := startFailure(t, tc.env)
			if !errors.Is(err, exitCode(1)) {
				t.Errorf("exit: %v, want status 1", err)
			}
			if !strings.Contains(stderr, tc.setting) {
				t.Errorf("the start-up error does not name %s:\n%s", tc.setting, stderr)
			}
		})
	}
}

// --- authentication ---

// authKind is one way heapdel authenticates to NATS.
type authKind struct {
	name     string
	setup    func(t *testing.T) authSetup
	settings []string // a wrong credential's error names at least one of these
	secrets  []string // never printed
}

// authSetup is a server that accepts only one kind of credential, the settings
// that pass, settings with a wrong credential, and the settings of an
// unrestricted user for the test's own publish and status commands.
type authSetup struct {
	opts             *server.Options
	good, bad, admin map[string]string
}

func authKinds() []authKind {
	return []authKind{
		{
			name: "user and password",
			setup: func(t *testing.T) authSetup {
				return authSetup{
					opts: &server.Options{Users: []*server.User{
						{Username: "heapdel", Password: "right-password-7f3", Permissions: documentedPermissions(t)["heapdel"]},
						{Username: "admin", Password: "admin-password"},
					}},
					good:  map[string]string{"HEAPDEL_NATS_USER": "heapdel", "HEAPDEL_NATS_PASSWORD": "right-password-7f3"},
					bad:   map[string]string{"HEAPDEL_NATS_USER": "heapdel", "HEAPDEL_NATS_PASSWORD": "wrong-password-91c"},
					admin: map[string]string{"HEAPDEL_NATS_USER": "admin", "HEAPDEL_NATS_PASSWORD": "admin-password"},
				}
			},
			settings: []string{"HEAPDEL_NATS_PASSWORD", "HEAPDEL_NATS_USER"},
			secrets:  []string{"right-password-7f3", "wrong-password-91c"},
		},
		{
			name: "token",
			setup: func(t *testing.T) authSetup {
				good := map[string]string{"HEAPDEL_NATS_TOKEN": "right-token-c41"}
				return authSetup{
					opts: &server.Options{Authorization: "right-token-c41"},
					good: good, admin: good,
					bad: map[string]string{"HEAPDEL_NATS_TOKEN": "wrong-token-0d2"},
				}
			},
			settings: []string{"HEAPDEL_NATS_TOKEN"},
			secrets:  []string{"right-token-c41", "wrong-token-0d2"},
		},
		{
			name: "nkey",
			setup: func(t *testing.T) authSetup {
				good, goodPub := nkeySeedFile(t, "good.nk")
				bad, _ := nkeySeedFile(t, "bad.nk")
				return authSetup{
					opts: &server.Options{Nkeys: []*server.NkeyUser{{Nkey: goodPub}}},
					good: map[string]string{"HEAPDEL_NATS_NKEY": good},
					bad:  map[string]string{"HEAPDEL_NATS_NKEY": bad}, admin: map[string]string{"HEAPDEL_NATS_NKEY": good},
				}
			},
			settings: []string{"HEAPDEL_NATS_NKEY"},
		},
		{
			name:     "creds file",
			setup:    credsSetup,
			settings: []string{"HEAPDEL_NATS_CREDS"},
		},
	}
}

func nkeySeedFile(t *testing.T, name string) (path, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	public, _ = kp.PublicKey()
	path = filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, public
}

// credsSetup builds a decentralised (JWT) deployment: an operator, a system
// account, an application account with JetStream, all resolved from memory. The
// heapdel user holds only the permissions docs/nats-permissions.md lists, so the
// documented set is proven in operator mode too. The wrong credential is a user
// of an account this server does not know.
func credsSetup(t *testing.T) authSetup {
	t.Helper()
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	newKP := func(create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
		kp, err := create()
		if err != nil {
			t.Fatal(err)
		}
		return kp, must(kp.PublicKey())
	}
	opKP, opPub := newKP(nkeys.CreateOperator)
	_, sysPub := newKP(nkeys.CreateAccount)
	accKP, accPub := newKP(nkeys.CreateAccount)

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "test-operator"
	oc.SystemAccount = sysPub
	opJWT := must(oc.Encode(opKP))

	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT := must(sc.Encode(opKP))

	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "APP"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT := must(ac.Encode(opKP))

	creds := func(name string, signer nkeys.KeyPair, perms *server.Permissions) string {
		ukp, upub := newKP(nkeys.CreateUser)
		uc := jwt.NewUserClaims(upub)
		uc.Name = name
		if perms != nil {
			uc.Pub.Allow.Add(perms.Publish.Allow...)
			uc.Sub.Allow.Add(perms.Subscribe.Allow...)
			if perms.Response != nil { // allow_responses: the request-reply service's replies
				uc.Resp = &jwt.ResponsePermission{MaxMsgs: perms.Response.MaxMsgs, Expires: perms.Response.Expires}
			}
		}
		seed, err := ukp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := jwt.FormatUserConfig(must(uc.Encode(signer)), seed)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name+".creds")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	strangerKP, _ := newKP(nkeys.CreateAccount)

	conf := fmt.Sprintf("operator: %q\nsystem_account: %q\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
		opJWT, sysPub, sysPub, sysJWT, accPub, accJWT)
	opts := &server.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		t.Fatalf("operator config: %v", err)
	}
	return authSetup{
		opts:  opts,
		good:  map[string]string{"HEAPDEL_NATS_CREDS": creds("heapdel", accKP, documentedPermissions(t)["heapdel"])},
		bad:   map[string]string{"HEAPDEL_NATS_CREDS": creds("stranger", strangerKP, nil)},
		admin: map[string]string{"HEAPDEL_NATS_CREDS": creds("admin", accKP, nil)},
	}
}

// TestNATSAuth runs heapdel with each kind of NATS credential SPEC.md lists: it
// connects and completes a deletion; a wrong credential stops it at start with an
// error that says the server refused it and names the setting to fix.
func TestNATSAuth(t *testing.T) {
	for _, kind := range authKinds() {
		t.Run(kind.name, func(t *testing.T) {
			as := kind.setup(t)
			srv, slog := startNATS(t, as.opts)
			sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key"})
			defer sim.Close()
			base := baseEnv(t, srv.ClientURL(), sim.URL)
			admin := natsEnv(base)
			for k, v := range as.admin {
				admin[k] = v
			}

			env := maps.Clone(base)
			maps.Copy(env, as.good)
			prog := startGuarded(t, env)
			waitReady(t, env["HEAPDEL_HTTP_ADDR"], prog)
			id := "auth-" + strings.ReplaceAll(kind.name, " ", "-")
			publishOne(t, admin, id, "auth-person@example.com")
			waitJobStatus(t, admin, id, "complete", prog)
			if err := prog.stop(t); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if v := slog.violations(); len(v) > 0 {
				t.Errorf("NATS refused some of heapdel's operations:\n%s", strings.Join(v, "\n"))
			}

			env = maps.Clone(base)
			maps.Copy(env, as.bad)
			env["HEAPDEL_HTTP_ADDR"] = freeAddr(t)
			stderr, err := startFailure(t, env)
			if !errors.Is(err, exitCode(1)) {
				t.Errorf("wrong credential: exit %v, want status 1", err)
			}
			if !strings.Contains(strings.ToLower(stderr), "authorization violation") {
				t.Errorf("wrong credential: the error does not say the server refused it:\n%s", stderr)
			}
			if !slices.ContainsFunc(kind.settings, func(s string) bool { return strings.Contains(stderr, s) }) {
				t.Errorf("wrong credential: the error names none of %v:\n%s", kind.settings, stderr)
			}
			for _, s := range kind.secrets {
				if strings.Contains(stderr+prog.stderr.String(), s) {
					t.Errorf("a NATS secret appears in heapdel's output")
				}
			}
		})
	}
}

// --- least privilege ---

// documentedPermissions reads the permission sets of docs/nats-permissions.md:
// each conf block that follows a "<!-- test: permissions NAME -->" marker is parsed
// as nats-server configuration, and its one user's permissions are NAME's.
func documentedPermissions(t *testing.T) map[string]*server.Permissions {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "nats-permissions.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- test: permissions (\\S+) -->\\s*```conf\\n(.*?)```")
	out := map[string]*server.Permissions{}
	for _, m := range re.FindAllSubmatch(doc, -1) {
		name := string(m[1])
		opts := &server.Options{}
		if err := opts.ProcessConfigString(string(m[2])); err != nil {
			t.Fatalf("docs/nats-permissions.md, block %s: %v", name, err)
		}
		if len(opts.Users) != 1 || opts.Users[0].Permissions == nil {
			t.Fatalf("docs/nats-permissions.md, block %s: want one user with permissions, got %d users", name, len(opts.Users))
		}
		out[name] = opts.Users[0].Permissions
	}
	for _, name := range []string{"heapdel", "heapdel-locked", "heapdel-migration", "publisher", "status-reader"} {
		if out[name] == nil {
			t.Fatalf("docs/nats-permissions.md has no block marked <!-- test: permissions %s -->", name)
		}
	}
	return out
}

// situationalPermissions returns the subjects of docs/nats-permissions.md's
// conf blocks that are marked "# situational" on their line: a normal run may not
// use them.
func situationalPermissions(t *testing.T) map[string]bool {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "nats-permissions.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*"([^"]+)"\s*#\s*situational`).FindAllSubmatch(doc, -1) {
		out[string(m[1])] = true
	}
	if len(out) == 0 {
		t.Fatal("docs/nats-permissions.md marks no permission situational: the marker may have changed")
	}
	return out
}

// requireAllUsed fails the test when user holds a permission of perms that the
// server never saw it use and that the page does not mark situational: the page
// promises that removing any other makes the run fail.
func requireAllUsed(t *testing.T, log *serverLog, user string, perms *server.Permissions) {
	t.Helper()
	if u := log.unused(user, perms, situationalPermissions(t)); len(u) > 0 {
		t.Errorf("docs/nats-permissions.md grants %s permissions the run never used; remove them, or mark them situational and say when they are needed:\n%s",
			user, strings.Join(u, "\n"))
	}
}

// mergePermissions is a user holding both sets' permissions.
func mergePermissions(a, b *server.Permissions) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: slices.Concat(a.Publish.Allow, b.Publish.Allow)},
		Subscribe: &server.SubjectPermission{Allow: slices.Concat(a.Subscribe.Allow, b.Subscribe.Allow)},
	}
}

// permServer runs a JetStream server whose users are the documented permission
// sets, each named after its set with password "pw-<name>", plus an unrestricted
// "admin". The env maps hold each user's heapdel NATS settings. The server traces
// what each user publishes, for requireAllUsed.
func permServer(t *testing.T, sets map[string]*server.Permissions) (srv *server.Server, log *serverLog, users map[string]map[string]string) {
	t.Helper()
	opts := &server.Options{Users: []*server.User{{Username: "admin", Password: "pw-admin"}}, Trace: true}
	for name, perms := range sets {
		opts.Users = append(opts.Users, &server.User{Username: name, Password: "pw-" + name, Permissions: perms})
	}
	srv, log = startNATS(t, opts)
	users = map[string]map[string]string{}
	for _, u := range opts.Users {
		users[u.Username] = map[string]string{
			"HEAPDEL_NATS_URL":      srv.ClientURL(),
			"HEAPDEL_NATS_USER":     u.Username,
			"HEAPDEL_NATS_PASSWORD": u.Password,
		}
	}
	return srv, log, users
}

// statusWatch records the status events published, as a downstream subscriber
// sees them: each request id's statuses in order of first appearance (a
// re-publication after a redelivery repeats an event, which subscribers drop).
type statusWatch struct {
	mu     sync.Mutex
	events map[string][]string
}

func watchStatuses(t *testing.T, url string, opts ...nats.Option) *statusWatch {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w := &statusWatch{events: map[string][]string{}}
	_, err = nc.Subscribe("heap.deletion.status.>", func(m *nats.Msg) {
		var ev struct {
			RequestID string `json:"request_id"`
			Status    string `json:"status"`
		}
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		w.mu.Lock()
		if !slices.Contains(w.events[ev.RequestID], ev.Status) {
			w.events[ev.RequestID] = append(w.events[ev.RequestID], ev.Status)
		}
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *statusWatch) of(requestID string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events[requestID])
}

// wait waits until requestID's status events are want, in order.
func (w *statusWatch) wait(t *testing.T, requestID string, want []string, p *program) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(w.of(requestID), want) {
		if time.Now().After(deadline) {
			t.Fatalf("status events of %s: %v, want %v\nheapdel log:\n%s", requestID, w.of(requestID), want, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fullRun takes one command through heapdel, as users do: published by a
// publisher holding the documented publisher permissions, followed through its
// status events until the recheck finds Heap's deletion complete, and read back
// with `heapdel status` by a user holding the documented status-reader
// permissions.
func fullRun(t *testing.T, env map[string]string, users map[string]map[string]string, watch *statusWatch, requestID string) {
	t.Helper()
	p := startGuarded(t, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	publishOne(t, users["publisher"], requestID, requestID+"@example.com")
	watch.wait(t, requestID, []string{"submitted", "processing", "complete"}, p)
	waitJobStatus(t, users["status-reader"], requestID, "complete", p)
	if err := p.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.stderr.String())
	}
}

// checkPasses runs `heapdel check` with env and fails the test unless it passes.
func checkPasses(t *testing.T, env map[string]string) {
	t.Helper()
	out, errOut, err := runCLI(t, env, "check")
	if err != nil || !strings.Contains(out, "all checks passed") {
		t.Errorf("heapdel check: %v\n%s%s", err, out, errOut)
	}
}

// TestPermissionsProvisioning runs heapdel, with provisioning on, as a NATS user
// holding exactly the first permission set of docs/nats-permissions.md, on a new
// server: it creates everything, takes a command, publishes its status events and
// rechecks it to complete; `heapdel check` passes with the same user; the server
// reports no permission violation, and saw every permission not marked
// situational used.
func TestPermissionsProvisioning(t *testing.T) {
	sets := documentedPermissions(t)
	srv, slog, users := permServer(t, map[string]*server.Permissions{
		"heapdel": sets["heapdel"], "publisher": sets["publisher"], "status-reader": sets["status-reader"],
	})
	sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key", CompleteAfter: 300 * time.Millisecond})
	defer sim.Close()
	watch := watchStatuses(t, srv.ClientURL(), nats.UserInfo("admin", "pw-admin"))

	env := baseEnv(t, "", sim.URL)
	maps.Copy(env, users["heapdel"])
	fullRun(t, env, users, watch, "lp-provision-1")
	checkPasses(t, env)
	if v := slog.violations(); len(v) > 0 {
		t.Fatalf("heapdel needed more than the documented permissions:\n%s", strings.Join(v, "\n"))
	}
	requireAllUsed(t, slog, "heapdel", sets["heapdel"])
}

// TestPermissionsNoProvisioning is the same with provisioning off: an
// administrator provisions once (heapdel run with full rights), then heapdel runs,
// and `heapdel check` verifies every object, as a user holding exactly the second,
// narrower permission set.
func TestPermissionsNoProvisioning(t *testing.T) {
	sets := documentedPermissions(t)
	srv, slog, users := permServer(t, map[string]*server.Permissions{
		"heapdel-locked": sets["heapdel-locked"], "publisher": sets["publisher"], "status-reader": sets["status-reader"],
	})
	sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key", CompleteAfter: 300 * time.Millisecond})
	defer sim.Close()
	watch := watchStatuses(t, srv.ClientURL(), nats.UserInfo("admin", "pw-admin"))

	adminEnv := baseEnv(t, "", sim.URL)
	maps.Copy(adminEnv, users["admin"])
	provisioner := startGuarded(t, adminEnv)
	waitReady(t, adminEnv["HEAPDEL_HTTP_ADDR"], provisioner)
	if err := provisioner.stop(t); err != nil {
		t.Fatalf("stop the provisioning run: %v", err)
	}

	env := baseEnv(t, "", sim.URL)
	maps.Copy(env, users["heapdel-locked"])
	env["HEAPDEL_PROVISION"] = "false"
	fullRun(t, env, users, watch, "lp-locked-1")
	checkPasses(t, env)
	if v := slog.violations(); len(v) > 0 {
		t.Fatalf("heapdel needed more than the documented permissions:\n%s", strings.Join(v, "\n"))
	}
	requireAllUsed(t, slog, "heapdel-locked", sets["heapdel-locked"])
}

// TestPermissionsMigration upgrades a deployment of the earlier layout (the
// command stream also carrying the recheck schedule and its ticks, and allowing
// roll-ups) as a user holding the first permission set plus the migration's:
// the commands queued before the upgrade and a new one are all completed, the
// server reports no permission violation, and every migration permission was
// used.
func TestPermissionsMigration(t *testing.T) {
	sets := documentedPermissions(t)
	perms := mergePermissions(sets["heapdel"], sets["heapdel-migration"])
	srv, slog, users := permServer(t, map[string]*server.Permissions{
		"heapdel": perms, "publisher": sets["publisher"], "status-reader": sets["status-reader"],
	})
	sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key", CompleteAfter: 300 * time.Millisecond})
	defer sim.Close()
	watch := watchStatuses(t, srv.ClientURL(), nats.UserInfo("admin", "pw-admin"))

	// The earlier layout, with commands queued.
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("admin", "pw-admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      "HEAP_DELETION",
		Subjects:  []string{"heap.deletion.requested", "heap.deletion.recheck", "heap.deletion.schedule.recheck"},
		Retention: jetstream.WorkQueuePolicy, Duplicates: 2 * time.Minute,
		AllowRollup: true, AllowMsgSchedules: true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "HEAP_DELETION", jetstream.ConsumerConfig{
		Durable: "heapdel-recheck", FilterSubject: "heap.deletion.recheck", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1,
	}); err != nil {
		t.Fatal(err)
	}
	queued := []string{"lp-migrate-queued-1", "lp-migrate-queued-2"}
	for _, id := range queued {
		publishOne(t, users["publisher"], id, id+"@example.com")
	}

	env := baseEnv(t, "", sim.URL)
	maps.Copy(env, users["heapdel"])
	p := startGuarded(t, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	for _, id := range queued {
		watch.wait(t, id, []string{"submitted", "processing", "complete"}, p)
	}
	publishOne(t, users["publisher"], "lp-migrate-new", "lp-migrate-new@example.com")
	watch.wait(t, "lp-migrate-new", []string{"submitted", "processing", "complete"}, p)
	if err := p.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "command stream migrated to the current layout") {
		t.Errorf("heapdel did not migrate the command stream:\n%s", p.stderr.String())
	}
	if v := slog.violations(); len(v) > 0 {
		t.Fatalf("the migration needed more than the documented permissions:\n%s", strings.Join(v, "\n"))
	}
	if u := slog.unused("heapdel", sets["heapdel-migration"], nil); len(u) > 0 {
		t.Errorf("docs/nats-permissions.md grants migration permissions the migration never used:\n%s", strings.Join(u, "\n"))
	}
}

// TestPermissionMissing takes one permission away from the documented set and
// checks that heapdel does not carry on as if nothing were wrong: within a few
// seconds its own log (or its exit error) says that NATS refused a permission, so
// that an operator learns what to grant. The server confirms the permission was
// needed.
func TestPermissionMissing(t *testing.T) {
	refused := regexp.MustCompile(`(?i)permissions? violation`)
	for _, tc := range []struct {
		name   string
		remove string
		when   string
	}{
		{"publish status events", "heap.deletion.status.*", "after a command"},
		{"acknowledge commands", "$JS.ACK.HEAP_DELETION.heapdel.>", "after a command"},
		{"bind the command consumer", "$JS.API.CONSUMER.INFO.HEAP_DELETION.heapdel", "at start"},
		// Provisioning retries a refused step until start's bound: the refusal
		// must still show at once, not after the retries.
		{"provision the schedule stream", "$JS.API.STREAM.CREATE.HEAP_DELETION_SCHEDULE", "at start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sets := documentedPermissions(t)
			perms := sets["heapdel"]
			allow := slices.DeleteFunc(slices.Clone(perms.Publish.Allow), func(s string) bool { return s == tc.remove })
			if len(allow) == len(perms.Publish.Allow) {
				t.Fatalf("%s is not in the documented set", tc.remove)
			}
			reduced := &server.Permissions{Publish: &server.SubjectPermission{Allow: allow}, Subscribe: perms.Subscribe}
			_, slog, users := permServer(t, map[string]*server.Permissions{"heapdel": reduced, "publisher": sets["publisher"]})
			sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key", CompleteAfter: 300 * time.Millisecond})
			defer sim.Close()

			env := baseEnv(t, "", sim.URL)
			maps.Copy(env, users["heapdel"])
			env["HEAPDEL_SHUTDOWN_TIMEOUT"] = "2s"
			p := startGuarded(t, env)
			if tc.when == "after a command" {
				waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
				publishOne(t, users["publisher"], "lp-missing-1", "missing@example.com")
			}

			deadline := time.Now().Add(6 * time.Second)
			for {
				var exitErr error
				exited := false
				select {
				case exitErr = <-p.done:
					exited = true
					p.done <- exitErr // for the cleanup's stop
				default:
				}
				out := p.stderr.String()
				if exitErr != nil {
					out += exitErr.Error()
				}
				if refused.MatchString(out) {
					break
				}
				if exited || time.Now().After(deadline) {
					t.Fatalf("NATS refused %q but heapdel gave no sign of it (exited: %v %v); server: %v\nheapdel log:\n%s",
						tc.remove, exited, exitErr, slog.violations(), p.stderr.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if len(slog.violations()) == 0 {
				t.Errorf("the server saw no violation: %s may not be needed", tc.remove)
			}
		})
	}
}

// --- Heap credentials and transport ---

// TestSecurityHeapAPIKeyFile runs a whole deletion with the Heap API key read
// from a file (surrounding whitespace trimmed, as a mounted secret often has), and
// checks that the key never reaches the logs. A missing or empty key file stops
// heapdel at start, naming the setting.
func TestSecurityHeapAPIKeyFile(t *testing.T) {
	const key = "sim-key-from-file-5e1"
	srv := natsServer(t)
	sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: key, CompleteAfter: 200 * time.Millisecond})
	defer sim.Close()
	keyFile := filepath.Join(t.TempDir(), "heap-api-key")
	if err := os.WriteFile(keyFile, []byte("\n  "+key+"  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := baseEnv(t, srv.ClientURL(), sim.URL)
	delete(env, "HEAPDEL_HEAP_API_KEY")
	env["HEAPDEL_HEAP_API_KEY_FILE"] = keyFile

	p := startGuarded(t, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	publishOne(t, natsEnv(env), "keyfile-1", "keyfile-person@example.com")
	waitJobStatus(t, natsEnv(env), "keyfile-1", "complete", p)
	if n := len(sim.Submissions()); n != 1 {
		t.Errorf("Heap got %d submissions, want 1", n)
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	logs := p.stderr.String()
	if strings.Contains(logs, key) {
		t.Error("the Heap API key appears in the log")
	}
	if !strings.Contains(logs, `"heap_api_key":"[redacted]"`) || !strings.Contains(logs, `"heap_api_key_file":"`+keyFile+`"`) {
		t.Errorf("the logged configuration should show the key redacted and the file's path")
	}

	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"missing": filepath.Join(t.TempDir(), "nope"), "empty": empty} {
		t.Run(name+" key file", func(t *testing.T) {
			stderr, err := startFailure(t, withEnv(env, "HEAPDEL_HEAP_API_KEY_FILE", path))
			if !errors.Is(err, exitCode(2)) || !strings.Contains(stderr, "HEAPDEL_HEAP_API_KEY_FILE") {
				t.Errorf("exit %v, want status 2 and a line naming HEAPDEL_HEAP_API_KEY_FILE:\n%s", err, stderr)
			}
		})
	}
}

// TestSecurityPlainHTTPHeapURL checks that heapdel refuses, before it connects to
// anything, to send the API key and identities over plain http to a host that is
// not loopback; the simulator's http://127.0.0.1 URL, used by every other test,
// is the allowed case.
func TestSecurityPlainHTTPHeapURL(t *testing.T) {
	for _, url := range []string{
		"http://heapanalytics.com",
		"http://heap.example.com:8080/api",
		"http://10.0.0.5:8080",
		"http://localhost.example.com",
		"http://127.0.0.1.nip.io",
		"http://user:pw@heap.example.com",
	} {
		t.Run(url, func(t *testing.T) {
			env := baseEnv(t, "nats://127.0.0.1:1", url)
			stderr, err := startFailure(t, env)
			if !errors.Is(err, exitCode(2)) {
				t.Errorf("exit %v, want status 2", err)
			}
			if !strings.Contains(stderr, "HEAPDEL_HEAP_BASE_URL") || !strings.Contains(stderr, "plain http") {
				t.Errorf("the error should name HEAPDEL_HEAP_BASE_URL and say plain http is refused:\n%s", stderr)
			}
			if strings.Contains(stderr, "pw@") {
				t.Errorf("the error shows the URL's password:\n%s", stderr)
			}
			if strings.Contains(stderr, "heapdel starting") {
				t.Errorf("heapdel started before refusing the URL:\n%s", stderr)
			}
		})
	}
}
