package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// ruleTestValues are the values the alert unit tests render the rules with: the
// chart's defaults with monitoring on, so the selector is
// job="heapdel",namespace="privacy" and every threshold is its default.
func ruleTestValues() map[string]any {
	return map[string]any{
		"credentials":    map[string]any{"existingSecret": "s"},
		"serviceMonitor": map[string]any{"enabled": true},
		"prometheusRule": map[string]any{"enabled": true},
	}
}

// renderedRuleFile renders the chart and returns its alert rules as a Prometheus
// rule file, and the rules decoded.
func renderedRuleFile(t *testing.T, vals map[string]any) ([]byte, []alertRule) {
	t.Helper()
	o := decodeAll(t, mustRender(t, loadChart(t), vals))
	if o.prometheusRule == nil {
		t.Fatal("no PrometheusRule rendered")
	}
	file, err := yaml.Marshal(map[string]any{"groups": o.prometheusRule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Groups []struct {
			Name  string      `json:"name"`
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(file, &parsed); err != nil {
		t.Fatalf("rendered rules: %v", err)
	}
	var rules []alertRule
	for _, g := range parsed.Groups {
		rules = append(rules, g.Rules...)
	}
	return file, rules
}

// TestAlertRules runs the alert unit tests in testdata/alerts (promtool test
// rules format) against the rules the chart renders, and checks every alert has
// a case where it fires and one where it stays quiet. With PROMTOOL set to a
// promtool binary, promtool runs the same files too.
func TestAlertRules(t *testing.T) {
	ruleFile, rules := renderedRuleFile(t, ruleTestValues())
	files, err := filepath.Glob(filepath.Join("testdata", "alerts", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/alerts/*.yaml (%v)", err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := decodeRuleTestFile(b)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !slices.Equal(f.RuleFiles, []string{"heapdel-rules.yaml"}) {
			t.Errorf("%s: rule_files is %v, want [heapdel-rules.yaml] (the rules rendered from the chart)", path, f.RuleFiles)
		}
		for i, tg := range f.Tests {
			name := tg.Name
			if name == "" {
				name = fmt.Sprintf("#%d", i)
			}
			t.Run(filepath.Base(path)+"/"+name, func(t *testing.T) {
				for _, msg := range runRuleTestGroup(rules, tg, time.Duration(f.EvaluationInterval)) {
					t.Error(msg)
				}
			})
			for _, tc := range tg.AlertRuleTest {
				if len(tc.ExpAlerts) > 0 {
					fires[tc.Alertname] = true
				} else {
					quiet[tc.Alertname] = true
				}
			}
		}
	}
	for _, r := range rules {
		if !fires[r.Alert] {
			t.Errorf("%s: no alert unit test where it fires", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no alert unit test where it stays quiet", r.Alert)
		}
	}

	promtool := os.Getenv("PROMTOOL")
	if promtool == "" {
		return
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "heapdel-rules.yaml"), ruleFile, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"test", "rules"}
	for _, path := range files {
		b, _ := os.ReadFile(path)
		dst := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, dst)
	}
	out, err := exec.Command(promtool, args...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", promtool, strings.Join(args, " "), err, out)
	}
}
