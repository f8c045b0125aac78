package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

// The bench prints figures; this checks they are there and consistent, never how fast.
func TestBenchReportsFigures(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"bench", "--in-process", "--count", "600", "--batch-size", "200", "--batch-wait", "3s", "--json"}, envOf(nil), &out, &errb)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	var r benchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out.String())
	}
	if r.Commands != 600 || r.Throughput <= 0 || r.BasePublish <= 0 || r.RatioToPublish <= 0 || r.LatencyP99MS < r.LatencyP50MS {
		t.Errorf("figures missing or inconsistent: %+v", r)
	}
	// 600 commands published at once, batches of 200 closed by size (the wait is
	// far longer): one token and three submissions.
	if r.HeapRequests != 4 {
		t.Errorf("Heap requests %d, want 4 (1 token + 3 batches)", r.HeapRequests)
	}

	out.Reset()
	err = run(context.Background(), []string{"bench", "--in-process", "--mode", "recheck", "--requests", "300", "--users", "2", "--json"}, envOf(nil), &out, &errb)
	if err != nil {
		t.Fatalf("bench recheck: %v\n%s", err, errb.String())
	}
	r = benchResult{}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Recheck) != 1 || r.Recheck[0].NoneDueCalls != 0 || r.Recheck[0].AllDueCalls != 300 {
		t.Errorf("recheck figures: %+v (want no Heap call when none is due, one per request when all are)", r.Recheck)
	}
}

// --cluster runs the same workload on R1 and R3 streams of a three-node cluster and
// prints both and R3/R1; this checks the figures are there and agree with each
// other, never how fast either is.
func TestBenchClusterReportsR1AndR3(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"bench", "--cluster", "--in-process", "--count", "300", "--batch-size", "100", "--batch-wait", "3s", "--json"}, envOf(nil), &out, &errb)
	if err != nil {
		t.Fatalf("bench --cluster: %v\n%s", err, errb.String())
	}
	t.Logf("progress:\n%s", errb.String())
	var r clusterBenchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench --cluster --json: %v\n%s", err, out.String())
	}
	for _, c := range []struct {
		name     string
		res      benchResult
		replicas int
	}{{"r1", r.R1, 1}, {"r3", r.R3, 3}} {
		res := c.res
		if res.Commands != 300 || res.BatchSize != 100 || res.ClusterNodes != 3 || res.StreamReplicas != c.replicas || res.SyncAlways {
			t.Errorf("%s: workload %+v, want 300 commands, batch 100, 3 nodes, R%d, default sync", c.name, res, c.replicas)
		}
		if res.Throughput <= 0 || res.BasePublish <= 0 || res.LatencyP50MS <= 0 || res.LatencyP99MS < res.LatencyP50MS || res.HeapRequests < 2 {
			t.Errorf("%s: figures missing or inconsistent: %+v", c.name, res)
		}
	}
	// The ratios are R3's figures over R1's, whatever the machine made of them.
	for _, c := range []struct {
		name        string
		ratio, want float64
	}{
		{"throughput", r.Ratio.Throughput, r.R3.Throughput / r.R1.Throughput},
		{"p50", r.Ratio.LatencyP50, r.R3.LatencyP50MS / r.R1.LatencyP50MS},
		{"p99", r.Ratio.LatencyP99, r.R3.LatencyP99MS / r.R1.LatencyP99MS},
		{"baseline publish", r.Ratio.BasePublish, r.R3.BasePublish / r.R1.BasePublish},
	} {
		if !(c.ratio > 0) || math.IsInf(c.ratio, 0) || math.Abs(c.ratio-c.want) > 1e-9*c.want {
			t.Errorf("ratio of %s %v, want R3/R1 = %v", c.name, c.ratio, c.want)
		}
	}

	var text bytes.Buffer
	printClusterBench(&text, r)
	for _, want := range []string{"R1", "R3", "R3/R1", "throughput (commands/s)", "publish→submitted p99 (ms)", "syncing every 2 minutes"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}
}

func TestBenchClusterRefusesRecheck(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"bench", "--cluster", "--mode", "recheck"}, envOf(nil), &out, &errb)
	if !errors.Is(err, exitCode(2)) || !strings.Contains(errb.String(), "--cluster") {
		t.Errorf("bench --cluster --mode recheck: %v, %q; want exit status 2 naming --cluster", err, errb.String())
	}
}
