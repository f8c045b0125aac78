package tests

// A runner for alert unit tests written in `promtool test rules` format, on the
// Prometheus rules engine's own parts (the PromQL engine, its series notation and
// its template expander), without promtool: building promtool pulls in every
// service-discovery SDK and takes minutes on a fresh machine, and the tsdb and
// rules packages pull in the same SDKs. The alert state machine below follows
// rules.AlertingRule.Eval (pending, then firing once `for` has passed; labels
// without __name__ plus the rule's labels and alertname; annotations expanded
// with $labels and $value), and the checks follow promtool's: at each eval_time,
// the firing alerts of that name must equal exp_alerts exactly, labels and
// annotations. Features heapdel's tests do not use (promql_expr_test, recording
// rules, histograms, keep_firing_for, external labels) are refused by the strict
// decoding instead of being ignored.

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/template"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"sigs.k8s.io/yaml"
)

// ruleTestFile is a promtool rule test file, with only the fields heapdel uses.
type ruleTestFile struct {
	RuleFiles          []string        `json:"rule_files"`
	EvaluationInterval model.Duration  `json:"evaluation_interval,omitempty"`
	Tests              []ruleTestGroup `json:"tests"`
}

type ruleTestGroup struct {
	Name          string          `json:"name,omitempty"`
	Interval      model.Duration  `json:"interval,omitempty"`
	InputSeries   []inputSeries   `json:"input_series"`
	AlertRuleTest []alertTestCase `json:"alert_rule_test"`
}

type inputSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}

type alertTestCase struct {
	EvalTime  model.Duration `json:"eval_time"`
	Alertname string         `json:"alertname"`
	ExpAlerts []expAlert     `json:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `json:"exp_labels,omitempty"`
	ExpAnnotations map[string]string `json:"exp_annotations,omitempty"`
}

// alertRule is one alerting rule as Prometheus loads it from a rule file.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         model.Duration    `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// decodeRuleTestFile decodes a test file strictly: an unknown or unsupported
// field is an error.
func decodeRuleTestFile(b []byte) (ruleTestFile, error) {
	var f ruleTestFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return f, err
	}
	if f.EvaluationInterval == 0 {
		f.EvaluationInterval = model.Duration(time.Minute)
	}
	for i := range f.Tests {
		if f.Tests[i].Interval == 0 {
			f.Tests[i].Interval = f.EvaluationInterval
		}
	}
	return f, nil
}

// firing is one firing alert, as promtool compares it.
type firing struct {
	labels, annotations labels.Labels
}

func (a firing) String() string {
	return fmt.Sprintf("labels: %s, annotations: %s", a.labels, a.annotations)
}

// runRuleTestGroup evaluates rules over the group's series as promtool does and
// returns one message per failed expectation.
func runRuleTestGroup(rules []alertRule, tg ruleTestGroup, evalInterval time.Duration) []string {
	store, err := loadSeries(tg)
	if err != nil {
		return []string{err.Error()}
	}
	engine := promql.NewEngine(promql.EngineOpts{
		MaxSamples:               10000,
		Timeout:                  100 * time.Second,
		NoStepSubqueryIntervalFn: func(int64) int64 { return evalInterval.Milliseconds() },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		EnableDelayedNameRemoval: true,
	})
	ctx := context.Background()
	query := func(ctx context.Context, q string, ts time.Time) (promql.Vector, error) {
		qry, err := engine.NewInstantQuery(ctx, store, nil, q, ts)
		if err != nil {
			return nil, err
		}
		defer qry.Close()
		res := qry.Exec(ctx)
		if res.Err != nil {
			return nil, res.Err
		}
		switch v := res.Value.(type) {
		case promql.Vector:
			return v, nil
		case promql.Scalar:
			return promql.Vector{promql.Sample{T: v.T, F: v.V}}, nil
		default:
			return nil, fmt.Errorf("rule result is not a vector or scalar: %s", res.Value.Type())
		}
	}

	byTime := map[model.Duration][]alertTestCase{}
	var evalTimes []model.Duration
	var maxEval model.Duration
	for _, tc := range tg.AlertRuleTest {
		if tc.Alertname == "" {
			return []string{fmt.Sprintf("an alert_rule_test at %s has no alertname", tc.EvalTime)}
		}
		if _, ok := byTime[tc.EvalTime]; !ok {
			evalTimes = append(evalTimes, tc.EvalTime)
		}
		byTime[tc.EvalTime] = append(byTime[tc.EvalTime], tc)
		maxEval = max(maxEval, tc.EvalTime)
	}
	slices.Sort(evalTimes)

	states := make([]map[uint64]*alertState, len(rules))
	for i := range states {
		states[i] = map[uint64]*alertState{}
	}
	var errs []string
	mint := time.Unix(0, 0).UTC()
	curr := 0
	for ts := mint; !ts.After(mint.Add(time.Duration(maxEval))); ts = ts.Add(evalInterval) {
		for i, r := range rules {
			if err := evalAlert(ctx, r, states[i], ts, query); err != nil {
				return append(errs, fmt.Sprintf("rule %s at %s: %v", r.Alert, ts.Sub(mint), err))
			}
		}
		// As promtool: an eval_time in [ts, ts+interval) is checked against the
		// evaluation at ts.
		for curr < len(evalTimes) && ts.Sub(mint) <= time.Duration(evalTimes[curr]) && time.Duration(evalTimes[curr]) < ts.Add(evalInterval).Sub(mint) {
			for _, tc := range byTime[evalTimes[curr]] {
				var got []firing
				for i, r := range rules {
					if r.Alert != tc.Alertname {
						continue
					}
					for _, a := range states[i] {
						if a.state == stateFiring {
							got = append(got, firing{a.labels, a.annotations})
						}
					}
				}
				var exp []firing
				for _, e := range tc.ExpAlerts {
					l := map[string]string{labels.AlertName: tc.Alertname}
					for k, v := range e.ExpLabels {
						l[k] = v
					}
					exp = append(exp, firing{labels.FromMap(l), labels.FromMap(e.ExpAnnotations)})
				}
				if !sameAlerts(exp, got) {
					errs = append(errs, fmt.Sprintf("alertname: %s, time: %s,\n  exp: %v\n  got: %v", tc.Alertname, tc.EvalTime, exp, got))
				}
			}
			curr++
		}
	}
	return errs
}

func sameAlerts(a, b []firing) bool {
	less := func(x, y firing) int {
		if c := labels.Compare(x.labels, y.labels); c != 0 {
			return c
		}
		return labels.Compare(x.annotations, y.annotations)
	}
	slices.SortFunc(a, less)
	slices.SortFunc(b, less)
	return slices.EqualFunc(a, b, func(x, y firing) bool {
		return labels.Equal(x.labels, y.labels) && labels.Equal(x.annotations, y.annotations)
	})
}

type alertStateKind int

const (
	stateInactive alertStateKind = iota
	statePending
	stateFiring
)

type alertState struct {
	labels, annotations labels.Labels
	activeAt, resolved  time.Time
	state               alertStateKind
}

// resolvedRetention is how long Prometheus keeps a resolved alert.
const resolvedRetention = 15 * time.Minute

// evalAlert evaluates one alerting rule at ts and updates its alerts, as
// rules.AlertingRule.Eval does.
func evalAlert(ctx context.Context, r alertRule, active map[uint64]*alertState, ts time.Time, query func(context.Context, string, time.Time) (promql.Vector, error)) error {
	res, err := query(ctx, r.Expr, ts)
	if err != nil {
		return err
	}
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	extURL, _ := url.Parse("")
	seen := map[uint64]*alertState{}
	for _, smpl := range res {
		data := template.AlertTemplateData(smpl.Metric.Map(), nil, "", smpl)
		var expandErr error
		expand := func(text string) string {
			out, err := template.NewTemplateExpander(ctx, defs+text, "__alert_"+r.Alert, data,
				model.Time(timestamp.FromTime(ts)), template.QueryFunc(query), extURL, nil).Expand()
			if err != nil {
				expandErr = err
			}
			return out
		}
		lb := labels.NewBuilder(smpl.Metric)
		lb.Del(labels.MetricName)
		for k, v := range r.Labels {
			lb.Set(k, expand(v))
		}
		lb.Set(labels.AlertName, r.Alert)
		ann := map[string]string{}
		for k, v := range r.Annotations {
			ann[k] = expand(v)
		}
		if expandErr != nil {
			return fmt.Errorf("expand templates: %w", expandErr)
		}
		lset := lb.Labels()
		h := lset.Hash()
		if _, dup := seen[h]; dup {
			return fmt.Errorf("two results with the labels %s", lset)
		}
		seen[h] = &alertState{labels: lset, annotations: labels.FromMap(ann), activeAt: ts, state: statePending}
	}
	for h, a := range seen {
		if old, ok := active[h]; ok && old.state != stateInactive {
			old.annotations = a.annotations
			continue
		}
		active[h] = a
	}
	hold := time.Duration(r.For)
	for h, a := range active {
		if _, ok := seen[h]; !ok {
			if a.state == statePending || (!a.resolved.IsZero() && ts.Sub(a.resolved) > resolvedRetention) {
				delete(active, h)
			}
			if a.state != stateInactive {
				a.state = stateInactive
				a.resolved = ts
			}
			continue
		}
		if a.state == statePending && ts.Sub(a.activeAt) >= hold {
			a.state = stateFiring
		}
	}
	return nil
}

// loadSeries expands the group's input series (promtool's notation: "0+10x5",
// "_" for a missing sample, "stale") into an in-memory store, one sample each
// interval from time 0.
func loadSeries(tg ruleTestGroup) (storage.Queryable, error) {
	var all []storage.Series
	for _, in := range tg.InputSeries {
		lset, vals, err := promParser.ParseSeriesDesc(in.Series + " " + in.Values)
		if err != nil {
			return nil, fmt.Errorf("input series %s: %w", in.Series, err)
		}
		var samples []chunks.Sample
		for i, v := range vals {
			if v.Omitted {
				continue
			}
			if v.Histogram != nil {
				return nil, fmt.Errorf("input series %s: histograms are not supported", in.Series)
			}
			samples = append(samples, floatSample{t: int64(i) * time.Duration(tg.Interval).Milliseconds(), f: v.Value})
		}
		all = append(all, storage.NewListSeries(lset, samples))
	}
	sort.Slice(all, func(i, j int) bool { return labels.Compare(all[i].Labels(), all[j].Labels()) < 0 })
	return memQueryable(all), nil
}

// memQueryable is a read-only store of a few series, for the PromQL engine.
type memQueryable []storage.Series

func (m memQueryable) Querier(int64, int64) (storage.Querier, error) { return m, nil }

func (m memQueryable) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range m {
		ok := true
		for _, matcher := range ms {
			if !matcher.Matches(s.Labels().Get(matcher.Name)) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return &seriesSet{series: out, i: -1}
}

func (m memQueryable) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (m memQueryable) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (m memQueryable) Close() error { return nil }

type seriesSet struct {
	series []storage.Series
	i      int
}

func (s *seriesSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *seriesSet) At() storage.Series                { return s.series[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// floatSample is one float sample of an input series.
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                      { return s.t }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }
