package heaptest

import (
	"net/http/httptest"
	"sync"
)

// Server is a [Sim] listening on a loopback address, in the style of
// httptest.Server.
type Server struct {
	*Sim
	URL string // base URL, "http://127.0.0.1:port", to use as the client's base URL

	srv  *httptest.Server
	once sync.Once
}

// NewServer starts a simulator configured by opts on 127.0.0.1. The caller must
// Close it. It panics if it cannot listen, as httptest.NewServer does.
func NewServer(opts Options) *Server {
	sim := New(opts)
	srv := httptest.NewServer(sim)
	return &Server{Sim: sim, URL: srv.URL, srv: srv}
}

// Close ends any injected latency, then shuts the server down and waits for its
// requests to finish. It is safe to call more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.Sim.close()
		s.srv.Close()
	})
}
