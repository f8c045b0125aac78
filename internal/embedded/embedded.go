// Package embedded starts an in-process NATS server with JetStream: the zero-setup
// default of `heapdel run` and `heapdel demo`, and the real server every test uses.
package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options says where the embedded server listens and stores its data.
type Options struct {
	Host     string // default 127.0.0.1: only local publishers reach it
	Port     int    // default 4222; -1 picks a free port
	StoreDir string // required: JetStream file storage
	// MaxPayload raises the largest message the server accepts (default 8 MiB), so a
	// full batch's job bookkeeping fits in one key-value entry.
	MaxPayload int32
	// SyncAlways makes JetStream sync every write to disk before acknowledging it
	// (sync_interval: always), so that what heapdel was told is stored survives a
	// power loss, not only a crash of the process. The service's own server sets
	// it. Without it JetStream syncs in the background every 2 minutes (the
	// nats-server default), ten times faster or more on most disks: right for
	// tests, whose data does not outlive them.
	SyncAlways bool
}

// Start runs a JetStream-enabled NATS server and waits until it accepts connections.
// It returns an error naming the cause when the port is taken or the store cannot be
// opened; the caller owns the server and must call Shutdown.
func Start(opts Options) (*server.Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("embedded nats: a storage directory is required")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = 4222
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = 8 << 20
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "heapdel-embedded",
		Host:       opts.Host,
		Port:       opts.Port,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		MaxPayload: opts.MaxPayload,
		NoSigs:     true,
		NoLog:      true,
		SyncAlways: opts.SyncAlways,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready to accept connections on %s:%d within 10s (is the port in use? set HEAPDEL_NATS_URL to use your own server)", opts.Host, opts.Port)
	}
	return srv, nil
}
