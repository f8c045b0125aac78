// Package clustertest runs a real NATS JetStream cluster in-process for tests: N
// embedded nats-server/v2 servers joined by routes, each with its own store, that a
// test can shut down (a node lost) and restart on the same ports and store (the node
// back), and whose stream leaders it can find. It is the cluster harness of heapdel's
// fault suites, where [Start] fails the test it was given on a setup error, and of
// `heapdel bench --cluster`, a command and not a test, which uses [New] and its errors.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Account is the account clients of a cluster without accounts use: the one whose
// streams [Cluster.StreamLeader] looks up.
const Account = server.DEFAULT_GLOBAL_ACCOUNT

// Options shape a [Cluster]. The zero value is three nodes, ready when started.
type Options struct {
	Nodes int    // default 3
	Name  string // cluster name, default "heapdel-test"
	// MaxPayload is the largest message the servers accept, default 8 MiB (as
	// heapdel's embedded server, so a full batch's bookkeeping fits in one entry).
	MaxPayload int32
	// SyncAlways makes JetStream sync every write before acknowledging it.
	SyncAlways bool
	// NoWait returns from [Start] as soon as every node accepts client
	// connections, before the cluster has elected a JetStream meta leader: for
	// tests of clients that start against a cluster still electing.
	NoWait bool
	// Logger, when set, receives the servers' logs (debugging a test).
	Logger server.Logger
	// ReadyTimeout bounds the wait for the meta leader, default 60s.
	ReadyTimeout time.Duration
	// StoreDir is the directory under which each node stores, in a subdirectory
	// named after it. [New] requires it; [Start] uses the test's t.TempDir().
	StoreDir string
}

// Cluster is a running JetStream cluster. Its methods are safe for concurrent use.
type Cluster struct {
	t    testing.TB // set by Start: the test Restart fails; nil from New
	opts Options

	mu    sync.Mutex
	nodes []*node
}

type node struct {
	name        string
	dir         string
	clientPort  int
	clusterPort int
	srv         *server.Server // nil while shut down
}

// Start runs a cluster of opts.Nodes servers on free loopback ports, each storing
// under its own directory of t.TempDir(), waits until each accepts connections and
// (unless opts.NoWait) until the cluster has a JetStream meta leader that knows every
// node, and shuts it down at the end of the test. It fails t when the cluster cannot
// be formed.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	c.t = t
	t.Cleanup(c.Close)
	return c
}

// New runs a cluster as [Start] does, outside a test: each node stores under
// opts.StoreDir, which the caller owns, and the caller must call [Cluster.Close].
// It returns an error, with every node it started shut down again, when opts.StoreDir
// is empty or the cluster cannot be formed.
func New(opts Options) (*Cluster, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("clustertest: Options.StoreDir is required")
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Name == "" {
		opts.Name = "heapdel-test"
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = 8 << 20
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = time.Minute
	}
	ports, err := freePorts(2 * opts.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts}
	for i := range opts.Nodes {
		c.nodes = append(c.nodes, &node{
			name:        fmt.Sprintf("n%d", i+1),
			dir:         filepath.Join(opts.StoreDir, fmt.Sprintf("n%d", i+1)),
			clientPort:  ports[2*i],
			clusterPort: ports[2*i+1],
		})
	}
	// Start them together: a node's routes to the others are retried until they are up.
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() { errs[i] = c.start(i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	if !opts.NoWait {
		if err := c.WaitReady(opts.ReadyTimeout); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// freePorts reserves n distinct loopback ports by listening on them, then frees
// them for the servers. Another process could take one in between; on a test
// machine that is rare, and Start then fails with the port named.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) serverOptions(n *node) *server.Options {
	routes := make([]*url.URL, 0, len(c.nodes))
	for _, o := range c.nodes {
		// Every node lists every node, itself included (nats-server ignores a route
		// to itself): the count of routes is how a fresh node learns the size of the
		// JetStream meta group it must wait for.
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", o.clusterPort)})
	}
	return &server.Options{
		ServerName: n.name,
		Host:       "127.0.0.1",
		Port:       n.clientPort,
		JetStream:  true,
		StoreDir:   n.dir,
		MaxPayload: c.opts.MaxPayload,
		SyncAlways: c.opts.SyncAlways,
		NoSigs:     true,
		NoLog:      c.opts.Logger == nil,
		Cluster: server.ClusterOpts{
			Name: c.opts.Name,
			Host: "127.0.0.1",
			Port: n.clusterPort,
		},
		Routes: routes,
	}
}

// start runs node i and waits until it accepts client connections.
func (c *Cluster) start(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	if n.srv != nil {
		c.mu.Unlock()
		return fmt.Errorf("node %s is already running", n.name)
	}
	opts := c.serverOptions(n)
	c.mu.Unlock()
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	if c.opts.Logger != nil {
		srv.SetLoggerV2(c.opts.Logger, false, false, false)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("node %s: not accepting connections on 127.0.0.1:%d (client) / %d (cluster) within 30s (port taken?)", n.name, n.clientPort, n.clusterPort)
	}
	c.mu.Lock()
	n.srv = srv
	c.mu.Unlock()
	return nil
}

// Nodes returns the number of nodes, running or not.
func (c *Cluster) Nodes() int { return len(c.nodes) }

// Name returns node i's server name, as JetStream reports it (a stream's leader).
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// URL returns node i's client URL; it stays the same across restarts.
func (c *Cluster) URL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].clientPort)
}

// URLs returns the client URLs of every node, comma-separated as nats.Connect takes
// them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Server returns node i's running server, or nil while it is shut down.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Running reports whether node i is up.
func (c *Cluster) Running(i int) bool { return c.Server(i) != nil }

// Shutdown stops node i, as a lost node: its clients are disconnected, its routes
// drop and its Raft groups lose a member; its store stays for [Cluster.Restart].
// The in-process server flushes its files on the way down, as a killed process
// whose writes reached the page cache would. It does nothing if the node is down.
func (c *Cluster) Shutdown(i int) {
	c.mu.Lock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}

// Restart starts node i again with the same ports, name and store, and waits until
// it accepts client connections (not until it has caught up: see
// [Cluster.WaitHealthy]). It fails the test given to [Start] if the node cannot
// start; on a cluster from [New], which has no test, it panics.
func (c *Cluster) Restart(i int) {
	if c.t == nil {
		if err := c.start(i); err != nil {
			panic(fmt.Sprintf("clustertest: restart: %v", err))
		}
		return
	}
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatalf("clustertest: restart: %v", err)
	}
}

// Close shuts every running node down, together, and waits for them. Their stores
// stay (Start's are removed with the test's temporary directory). It is safe to call
// twice; [Start] calls it at the end of the test.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() { c.Shutdown(i) })
	}
	wg.Wait()
}

// MetaLeader returns the index of the node that leads the JetStream meta group, or
// -1 when there is none (an election is under way).
func (c *Cluster) MetaLeader() int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// WaitReady waits until the cluster has a meta leader that counts every node as a
// peer and every running node's meta state is current. It returns an error saying
// what is missing when timeout passes first.
func (c *Cluster) WaitReady(timeout time.Duration) error {
	return poll(timeout, func() error {
		l := c.MetaLeader()
		if l < 0 {
			return errors.New("no JetStream meta leader")
		}
		if peers := len(c.Server(l).JetStreamClusterPeers()); peers != len(c.nodes) {
			return fmt.Errorf("meta leader %s knows %d of %d peers", c.nodes[l].name, peers, len(c.nodes))
		}
		for i := range c.nodes {
			if s := c.Server(i); s != nil && !s.JetStreamIsCurrent() {
				return fmt.Errorf("node %s is not current with the meta group", c.nodes[i].name)
			}
		}
		return nil
	})
}

// WaitHealthy waits until every running node's /healthz (JetStream included: every
// stream and consumer it hosts is current) reports ok. It returns the last
// complaint when timeout passes first.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	return poll(timeout, func() error {
		for i := range c.nodes {
			s := c.Server(i)
			if s == nil {
				continue
			}
			if h := s.Healthz(nil); h.Status != "ok" {
				return fmt.Errorf("node %s: %s %s", c.nodes[i].name, h.Status, h.Error)
			}
		}
		return nil
	})
}

// StreamLeader returns the index of the node that leads stream (of [Account]), or
// -1 when no running node does (an election is under way, or no such stream).
// A key-value bucket B is the stream "KV_B".
func (c *Cluster) StreamLeader(stream string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(Account, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until stream has a leader on a running node and returns
// its index. It returns an error when timeout passes first.
func (c *Cluster) WaitStreamLeader(stream string, timeout time.Duration) (int, error) {
	leader := -1
	err := poll(timeout, func() error {
		if leader = c.StreamLeader(stream); leader < 0 {
			return fmt.Errorf("stream %s has no leader", stream)
		}
		return nil
	})
	return leader, err
}

// ConsumerLeader returns the index of the node that leads the durable consumer of
// stream, or -1 when no running node does.
func (c *Cluster) ConsumerLeader(stream, consumer string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsConsumerLeader(Account, stream, consumer) {
			return i
		}
	}
	return -1
}

// poll calls cond every 25ms until it returns nil or timeout passes, then returns
// cond's last error.
func poll(timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}
