package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// seriesFromPrometheus are series Prometheus makes itself, not heapdel.
var seriesFromPrometheus = map[string]bool{"up": true}

// exportedMetrics returns the metric families heapdel exports, from
// testdata/metrics.txt (which a test in heapdel's own module checks against the
// service's registry).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !model.UTF8Validation.IsValidMetricName(line) || strings.ContainsAny(line, " {") {
			t.Fatalf("testdata/metrics.txt: %q is not a metric name", line)
		}
		names[line] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// family returns the metric family a series name belongs to: a histogram's
// _bucket, _sum and _count series belong to the histogram.
func family(name string, exported map[string]bool) string {
	if exported[name] {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && exported[base] {
			return base
		}
	}
	return name
}

var promParser = parser.NewParser(parser.Options{})

// metricNames parses a PromQL expression and returns the families it reads; a
// parse error or a name heapdel does not export fails the test.
func metricNames(t *testing.T, where, expr string, exported map[string]bool) []string {
	t.Helper()
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: PromQL does not parse: %v\n%s", where, err, expr)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			t.Errorf("%s: a selector without a metric name: %s", where, vs)
			return nil
		}
		fam := family(name, exported)
		if !exported[fam] && !seriesFromPrometheus[name] {
			t.Errorf("%s: %s is not a metric heapdel exports (testdata/metrics.txt)", where, name)
		}
		names = append(names, fam)
		return nil
	})
	return names
}

// renderedRule renders the everything-on case and returns its PrometheusRule.
func renderedRule(t *testing.T) *monitoringv1.PrometheusRule {
	t.Helper()
	o := decodeAll(t, mustRender(t, loadChart(t), ciCases(t)["everything-on"]))
	if o.prometheusRule == nil {
		t.Fatal("everything-on renders no PrometheusRule")
	}
	return o.prometheusRule
}

// checkPrometheusRule checks a rendered rule the way Prometheus loads it (rulefmt:
// unknown fields, PromQL, durations, annotation templates), then checks every
// alert's metrics, annotations and runbook anchor.
func checkPrometheusRule(t *testing.T, pr *monitoringv1.PrometheusRule) {
	t.Helper()
	exported := exportedMetrics(t)
	groups, err := yaml.Marshal(map[string]any{"groups": pr.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := rulefmt.Parse(groups, false, model.UTF8Validation, promParser, slog.New(slog.DiscardHandler)); len(errs) > 0 {
		for _, err := range errs {
			t.Errorf("rules do not load in Prometheus: %v", err)
		}
	}
	anchors := runbookAnchors(t)
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("rule %q is not an alert", r.Record)
				continue
			}
			metricNames(t, r.Alert, r.Expr.String(), exported)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			_, anchor, ok := strings.Cut(r.Annotations["runbook_url"], "#")
			if !ok || anchor != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook_url %q does not end in #%s", r.Alert, r.Annotations["runbook_url"], strings.ToLower(r.Alert))
			} else if !anchors[anchor] {
				t.Errorf("%s: docs/runbook.md has no section #%s", r.Alert, anchor)
			}
		}
	}
}

// runbookAnchors returns the GitHub anchors of docs/runbook.md's headings.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	drop := regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		anchors[a] = true
	}
	return anchors
}

// TestAlerts checks the alert set covers what operators must hear about, and
// that it is loadable with the chart's defaults too.
func TestAlerts(t *testing.T) {
	pr := renderedRule(t)
	exported := exportedMetrics(t)
	alerts := map[string][]string{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = metricNames(t, r.Alert, r.Expr.String(), exported)
		}
	}
	// What each required alert must read.
	for alert, metric := range map[string]string{
		"HeapdelDown":                    "up",
		"HeapdelNotReady":                "heapdel_ready",
		"HeapdelHeapCredentialsRejected": "heapdel_heap_credentials_rejected_total",
		"HeapdelHeapErrors":              "heapdel_heap_requests_total",
		"HeapdelHeapRateLimited":         "heapdel_heap_requests_total",
		"HeapdelDeletionsPendingTooLong": "heapdel_oldest_pending_seconds",
		"HeapdelDeletionsDueWithin24h":   "heapdel_deadline_pending_due",
		"HeapdelDeadlineBreached":        "heapdel_deadline_pending_breached",
		"HeapdelInvalidCommands":         "heapdel_commands_total",
		"HeapdelCommandsRolledUp":        "heapdel_commands_rollup_total",
		"HeapdelCommandBacklogGrowing":   "heapdel_commands_backlog",
		"HeapdelCommandsNotDraining":     "heapdel_batches_total",
		"HeapdelRecheckTicksStopped":     "heapdel_recheck_ticks_total",
		"HeapdelStalled":                 "heapdel_stalled",
		"HeapdelJobsStuck":               "heapdel_jobs_stuck",
		"HeapdelReconcilerRepaired":      "heapdel_reconciled_total",
		"HeapdelHeapRetryAfterClamped":   "heapdel_heap_retry_after_clamped_total",
	} {
		names, ok := alerts[alert]
		if !ok {
			t.Errorf("no alert %s", alert)
			continue
		}
		if !contains(names, metric) {
			t.Errorf("%s reads %v, not %s", alert, names, metric)
		}
	}

	// The chart's defaults with the rule switched on.
	o := decodeAll(t, mustRender(t, loadChart(t), map[string]any{
		"credentials":    map[string]any{"existingSecret": "s"},
		"prometheusRule": map[string]any{"enabled": true},
	}))
	checkPrometheusRule(t, o.prometheusRule)
	for _, r := range o.prometheusRule.Spec.Groups[0].Rules {
		if r.Alert == "HeapdelDown" {
			t.Error("HeapdelDown is rendered without the ServiceMonitor: absent(up{...}) would fire for ever")
		}
	}
	if expr := o.prometheusRule.Spec.Groups[0].Rules[0].Expr.String(); !strings.Contains(expr, `job="heapdel",namespace="privacy"`) {
		t.Errorf("the default selector is not the ServiceMonitor's job and namespace: %s", expr)
	}
}

// TestDownAlertFollowsServiceMonitor checks HeapdelDown, which fires on
// absent(up{...}), is rendered only when something yields the selector's up
// series: the chart's ServiceMonitor (downAlert auto), or the operator's own
// scrape config (downAlert true).
func TestDownAlertFollowsServiceMonitor(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		serviceMonitor bool
		downAlert      any
		want           bool
	}{
		{false, "auto", false},
		{true, "auto", true},
		{false, true, true},
		{true, false, false},
	} {
		t.Run(fmt.Sprintf("serviceMonitor %v, downAlert %v", tc.serviceMonitor, tc.downAlert), func(t *testing.T) {
			o := decodeAll(t, mustRender(t, c, map[string]any{
				"credentials":    map[string]any{"existingSecret": "s"},
				"serviceMonitor": map[string]any{"enabled": tc.serviceMonitor},
				"prometheusRule": map[string]any{"enabled": true, "downAlert": tc.downAlert},
			}))
			got := false
			for _, r := range o.prometheusRule.Spec.Groups[0].Rules {
				got = got || r.Alert == "HeapdelDown"
			}
			if got != tc.want {
				t.Errorf("HeapdelDown rendered: %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRecheckTicksWindow checks HeapdelRecheckTicksStopped takes its window from
// prometheusRule.thresholds.recheckTicksWindow.
func TestRecheckTicksWindow(t *testing.T) {
	o := decodeAll(t, mustRender(t, loadChart(t), map[string]any{
		"credentials":    map[string]any{"existingSecret": "s"},
		"prometheusRule": map[string]any{"enabled": true, "thresholds": map[string]any{"recheckTicksWindow": "40m"}},
	}))
	for _, r := range o.prometheusRule.Spec.Groups[0].Rules {
		if r.Alert == "HeapdelRecheckTicksStopped" {
			if !strings.Contains(r.Expr.String(), "[40m]") {
				t.Errorf("HeapdelRecheckTicksStopped does not use the 40m window: %s", r.Expr.String())
			}
			return
		}
	}
	t.Error("no HeapdelRecheckTicksStopped")
}

// grafanaVars replaces Grafana's interval variables with durations, so that a
// panel's query is plain PromQL. Template variables such as $namespace sit in
// label values, which are strings to PromQL.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "${__rate_interval}", "5m",
	"$__interval", "1m", "${__interval}", "1m",
	"$__range", "1h", "${__range}", "1h",
)

// dashboardQueries returns every PromQL query of a dashboard: the panels'
// targets, and the metric selectors of label_values() variables.
func dashboardQueries(t *testing.T, raw []byte) map[string]string {
	t.Helper()
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if dash["uid"] != "heapdel" || dash["title"] == "" {
		t.Errorf("dashboard uid %v, title %v", dash["uid"], dash["title"])
	}
	queries := map[string]string{}
	var walkPanels func(ps []any)
	walkPanels = func(ps []any) {
		for _, p := range ps {
			p := p.(map[string]any)
			title, _ := p["title"].(string)
			if sub, ok := p["panels"].([]any); ok {
				walkPanels(sub)
			}
			targets, _ := p["targets"].([]any)
			if p["type"] != "row" && len(targets) == 0 {
				t.Errorf("panel %q has no query", title)
			}
			for _, tg := range targets {
				tg := tg.(map[string]any)
				expr, _ := tg["expr"].(string)
				queries["panel "+title+" "+tg["refId"].(string)] = grafanaVars.Replace(expr)
			}
		}
	}
	panels, _ := dash["panels"].([]any)
	walkPanels(panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	templating, _ := dash["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	for _, v := range vars {
		v := v.(map[string]any)
		if v["type"] != "query" {
			continue
		}
		def, _ := v["definition"].(string)
		m := labelValues.FindStringSubmatch(def)
		if m == nil {
			t.Errorf("variable %v: %q is not label_values(<selector>, <label>)", v["name"], def)
			continue
		}
		queries["variable "+v["name"].(string)] = m[1]
	}
	return queries
}

// TestDashboard checks every query of the dashboard parses and reads metrics
// heapdel exports, and that it shows what the issue asks for.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "heapdel.json"))
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	used := map[string]bool{}
	queries := dashboardQueries(t, raw)
	keys := make([]string, 0, len(queries))
	for k := range queries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, where := range keys {
		for _, n := range metricNames(t, where, queries[where], exported) {
			used[n] = true
		}
	}
	for _, want := range []string{
		"heapdel_commands_total", "heapdel_status_events_total",
		"heapdel_jobs_pending", "heapdel_oldest_pending_seconds",
		"heapdel_deadline_pending_due", "heapdel_deadline_pending_breached", "heapdel_deadline_completed_late_total",
		"heapdel_heap_request_duration_seconds", "heapdel_heap_requests_total",
		"heapdel_heap_batch_users", "heapdel_heap_retries_total", "heapdel_commands_backlog",
	} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	if !strings.Contains(string(raw), "histogram_quantile(") {
		t.Error("the dashboard shows no latency quantiles")
	}
}

// checkDashboardConfigMap checks the dashboard ConfigMap carries the dashboard
// file unchanged, with the labels the Grafana sidecar watches.
func checkDashboardConfigMap(t *testing.T, cm *corev1.ConfigMap, vals map[string]any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "heapdel.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(cm.Data["heapdel.json"]) != strings.TrimSpace(string(raw)) {
		t.Error("the dashboard ConfigMap does not hold dashboards/heapdel.json as is")
	}
	want := map[string]any{"grafana_dashboard": "1"}
	if gd, ok := vals["grafanaDashboard"].(map[string]any); ok {
		if l, ok := gd["labels"].(map[string]any); ok {
			want = l
		}
	}
	for k, v := range want {
		if cm.Labels[k] != v {
			t.Errorf("dashboard ConfigMap label %s=%q, want %q", k, cm.Labels[k], v)
		}
	}
}

// TestDashboardConfigMapDefaults checks the sidecar label is there by default.
func TestDashboardConfigMapDefaults(t *testing.T) {
	o := decodeAll(t, mustRender(t, loadChart(t), map[string]any{
		"credentials":      map[string]any{"existingSecret": "s"},
		"grafanaDashboard": map[string]any{"enabled": true},
	}))
	if o.dashboardConfig == nil {
		t.Fatal("no dashboard ConfigMap")
	}
	if o.dashboardConfig.Labels["grafana_dashboard"] != "1" {
		t.Errorf("labels %v lack grafana_dashboard: \"1\"", o.dashboardConfig.Labels)
	}
	checkDashboardConfigMap(t, o.dashboardConfig, nil)
}

// TestMetricsList checks testdata/metrics.txt holds what the alerts and the
// dashboard need, and nothing twice.
func TestMetricsList(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		if seen[l] {
			t.Errorf("%s is listed twice", l)
		}
		seen[l] = true
	}
	for _, n := range []string{"heapdel_deadline_pending_due", "heapdel_deadline_pending_breached", "heapdel_deadline_completed_late_total", "heapdel_commands_backlog", "heapdel_ready"} {
		if !seen[n] {
			t.Errorf("testdata/metrics.txt lacks %s", n)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
