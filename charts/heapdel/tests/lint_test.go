package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
)

// lintChart runs what `helm lint --strict --kube-version <kubeVersion>
// --namespace <namespace>` runs, with vals as the -f values.
func lintChart(t *testing.T, vals map[string]any) *action.LintResult {
	t.Helper()
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	l := action.NewLint()
	l.Strict = true
	l.Namespace = namespace
	l.KubeVersion = kv
	if vals == nil {
		vals = map[string]any{}
	}
	return l.Run([]string{chartDir}, vals)
}

// TestLintStrict lints the chart with its own defaults and with each ci/ case; a
// warning fails, as with --strict.
func TestLintStrict(t *testing.T) {
	cases := ciCases(t)
	cases["chart defaults"] = nil
	for name, vals := range cases {
		t.Run(name, func(t *testing.T) {
			res := lintChart(t, vals)
			for _, m := range res.Messages {
				if m.Severity > support.InfoSev {
					t.Errorf("lint: %s", m)
				} else {
					t.Logf("lint: %s", m)
				}
			}
			for _, err := range res.Errors {
				t.Errorf("lint error: %v", err)
			}
			if res.TotalChartsLinted != 1 {
				t.Errorf("linted %d charts, want 1", res.TotalChartsLinted)
			}
		})
	}
}

// TestSchemaRejects checks values.schema.json refuses wrong values: an unknown
// key anywhere, a value outside an enum, a wrong type.
func TestSchemaRejects(t *testing.T) {
	c := loadChart(t)
	base := func() map[string]any {
		return map[string]any{"credentials": map[string]any{"existingSecret": "heapdel-credentials"}}
	}
	for name, tc := range map[string]struct {
		vals map[string]any
		want string
	}{
		"wrong enum deletionBehavior": {
			vals: map[string]any{"config": map[string]any{"deletionBehavior": "sometimes"}},
			want: "deletionBehavior",
		},
		"wrong enum nats.auth": {
			vals: map[string]any{"nats": map[string]any{"auth": "password"}},
			want: "auth",
		},
		"wrong enum podDisruptionBudget.enabled": {
			vals: map[string]any{"podDisruptionBudget": map[string]any{"enabled": "yes"}},
			want: "enabled",
		},
		"unknown top-level key": {
			vals: map[string]any{"replicas": 3},
			want: "replicas",
		},
		"unknown nested key": {
			vals: map[string]any{"config": map[string]any{"batchsize": 10}},
			want: "batchsize",
		},
		"unknown key in credentials": {
			vals: map[string]any{"credentials": map[string]any{"apiKey": "k"}},
			want: "apiKey",
		},
		"wrong type": {
			vals: map[string]any{"replicaCount": "two"},
			want: "replicaCount",
		},
		"batch size out of range": {
			vals: map[string]any{"config": map[string]any{"batchSize": 20000}},
			want: "batchSize",
		},
		"bad duration": {
			vals: map[string]any{"config": map[string]any{"batchWait": "1 second"}},
			want: "batchWait",
		},
	} {
		t.Run(name, func(t *testing.T) {
			vals := chartutil.CoalesceTables(tc.vals, base())
			_, err := render(t, c, releaseName, vals)
			if err == nil {
				t.Fatal("the schema accepted the values")
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a schema error naming %q", err, tc.want)
			}
		})
	}
}

// TestSchemaShape checks values.schema.json is draft-07, self-contained, and
// closed: every object with properties forbids others.
func TestSchemaShape(t *testing.T) {
	var schema map[string]any
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	if schema["$schema"] != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("$schema is %v, want draft-07", schema["$schema"])
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok && !strings.HasPrefix(ref, "#/") {
				t.Errorf("%s: $ref %q is not local", path, ref)
			}
			if _, ok := v["$id"]; ok {
				t.Errorf("%s: $id makes the schema depend on a URL", path)
			}
			if _, hasProps := v["properties"]; hasProps && v["additionalProperties"] != false {
				t.Errorf("%s: an object with properties does not set additionalProperties: false", path)
			}
			for k, sub := range v {
				walk(path+"/"+k, sub)
			}
		case []any:
			for i, sub := range v {
				walk(fmt.Sprintf("%s/%d", path, i), sub)
			}
		}
	}
	walk("#", schema)
	if req, _ := schema["required"].([]any); len(req) == 0 {
		t.Error("the root lists no required values")
	}
}

// TestReadmeDocumentsEveryValue checks the chart README names every value the
// schema describes, down to the leaves of the closed objects.
func TestReadmeDocumentsEveryValue(t *testing.T) {
	var schema map[string]any
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var walk func(prefix string, node map[string]any)
	walk = func(prefix string, node map[string]any) {
		// A shared definition (a duration, a probe, a map) is documented as one value.
		props, ok := node["properties"].(map[string]any)
		if !ok || len(props) == 0 {
			paths = append(paths, prefix)
			return
		}
		for k, sub := range props {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, sub.(map[string]any))
		}
	}
	walk("", schema)
	sort.Strings(paths)
	for _, p := range paths {
		if !strings.Contains(string(readme), "`"+p+"`") {
			t.Errorf("README.md does not document `%s`", p)
		}
	}
}
