package main

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// metricList is the chart's list of the metric families heapdel exports; its alerts
// and dashboard may use only these names.
const metricList = "../../charts/heapdel/tests/testdata/metrics.txt"

// TestChartMetricListMatchesTheService keeps the chart honest: every heapdel_ metric
// the service registers is in the list, and every name in the list is registered.
func TestChartMetricListMatchesTheService(t *testing.T) {
	raw, err := os.ReadFile(metricList)
	if err != nil {
		t.Fatalf("read the chart's metric list: %v", err)
	}
	var listed []string
	for _, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			listed = append(listed, line)
		}
	}

	srv := natsServer(t)
	sim := heaptest.NewServer(heaptest.Options{})
	defer sim.Close()
	cfg := config.Default()
	cfg.NATSURL, cfg.DataDir = srv.ClientURL(), t.TempDir()
	cfg.HeapAppID, cfg.HeapAPIKey, cfg.HeapBaseURL = "sim-app", "sim-key", sim.URL
	cfg.HTTPAddr = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := start(ctx, cfg, zerolog.Nop(), appOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.close() }()

	registered := map[string]bool{}
	ch := make(chan *prometheus.Desc, 64)
	go func() { a.reg.Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			registered[m[1]] = true
		}
	}
	for _, name := range listed {
		if !registered[name] {
			t.Errorf("%s is in %s but the service does not export it", name, metricList)
		}
	}
	for name := range registered {
		if strings.HasPrefix(name, "heapdel_") && !slices.Contains(listed, name) {
			t.Errorf("the service exports %s but %s lacks it", name, metricList)
		}
	}
}
