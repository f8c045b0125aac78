// Package tests checks the heapdel Helm chart: it renders every case in ci/ with
// the Helm library, lints it as `helm lint --strict` does, decodes every object
// strictly into the Kubernetes and prometheus-operator API types, and checks the
// PromQL of the alerts and the dashboard against the metrics heapdel exports.
//
// It is its own module so that Helm and Kubernetes stay out of heapdel's go.mod.
// Run it from the repository root with: go -C charts/heapdel/tests test ./...
package tests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = ".."
	repoRoot = "../../.."
	// kubeVersion is the Kubernetes version the chart is rendered and linted for,
	// as `helm template --kube-version` and `helm lint --kube-version` take it.
	kubeVersion = "v1.33.0"
	releaseName = "heapdel"
	namespace   = "privacy"
)

// loadChart returns the chart, loaded as `helm package` would (.helmignore applies).
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// ciCases returns the values files in ci/, by case name (file name without
// -values.yaml).
func ciCases(t *testing.T) map[string]chartutil.Values {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no ci/*-values.yaml cases (%v)", err)
	}
	cases := map[string]chartutil.Values{}
	for _, p := range paths {
		v, err := chartutil.ReadValuesFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		cases[strings.TrimSuffix(filepath.Base(p), "-values.yaml")] = v
	}
	for _, want := range []string{"defaults", "everything-on", "existing-secret", "rendered-secret", "networkpolicy"} {
		if _, ok := cases[want]; !ok {
			t.Errorf("ci/%s-values.yaml is missing", want)
		}
	}
	return cases
}

// rendered is a chart rendered as `helm template` renders it.
type rendered struct {
	manifests []releaseutil.Manifest
	notes     string
}

// render renders the chart with vals on top of values.yaml, client-side, for
// kubeVersion, validating vals against values.schema.json on the way.
func render(t *testing.T, c *chart.Chart, name string, vals map[string]any) (rendered, error) {
	t.Helper()
	cfg := &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...any) {},
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(cfg)
	install.DryRun = true
	install.DryRunOption = "client"
	install.ClientOnly = true
	install.Replace = true
	install.IncludeCRDs = true
	install.ReleaseName = name
	install.Namespace = namespace
	install.KubeVersion = kv
	rel, err := install.Run(c, vals)
	if err != nil {
		return rendered{}, err
	}
	_, manifests, err := releaseutil.SortManifests(releaseutil.SplitManifests(rel.Manifest), nil, releaseutil.InstallOrder)
	if err != nil {
		return rendered{}, fmt.Errorf("split manifests: %w", err)
	}
	return rendered{manifests: manifests, notes: rel.Info.Notes}, nil
}

// mustRender is render for values that must work.
func mustRender(t *testing.T, c *chart.Chart, vals map[string]any) rendered {
	t.Helper()
	r, err := render(t, c, releaseName, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

// objects is every object of one render, decoded strictly into its API type.
type objects struct {
	deployment      *appsv1.Deployment
	service         *corev1.Service
	serviceAccount  *corev1.ServiceAccount
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	pdb             *policyv1.PodDisruptionBudget
	networkPolicy   *networkingv1.NetworkPolicy
	serviceMonitor  *monitoringv1.ServiceMonitor
	prometheusRule  *monitoringv1.PrometheusRule
	kinds           []string
	dashboardConfig *corev1.ConfigMap
}

// decodeStrict decodes one rendered object into out the way the API server
// does, case-sensitively; an unknown or misspelled field (readonly for readOnly
// too), or a duplicate one, is an error.
func decodeStrict(doc string, out any) error {
	j, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, out)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// decodeAll decodes every rendered object strictly into the type its apiVersion
// and kind name; an object of any other kind fails the test.
func decodeAll(t *testing.T, r rendered) objects {
	t.Helper()
	var o objects
	for _, m := range r.manifests {
		m.Name = source(m)
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(m.Content), &tm); err != nil {
			t.Fatalf("%s: not YAML: %v", m.Name, err)
		}
		gvk := tm.APIVersion + "/" + tm.Kind
		o.kinds = append(o.kinds, tm.Kind)
		var obj any
		switch gvk {
		case "apps/v1/Deployment":
			if o.deployment != nil {
				t.Fatalf("%s: a second Deployment", m.Name)
			}
			o.deployment = &appsv1.Deployment{}
			obj = o.deployment
		case "v1/Service":
			o.service = &corev1.Service{}
			obj = o.service
		case "v1/ServiceAccount":
			o.serviceAccount = &corev1.ServiceAccount{}
			obj = o.serviceAccount
		case "v1/ConfigMap":
			cm := &corev1.ConfigMap{}
			o.configMaps = append(o.configMaps, cm)
			obj = cm
		case "v1/Secret":
			s := &corev1.Secret{}
			o.secrets = append(o.secrets, s)
			obj = s
		case "policy/v1/PodDisruptionBudget":
			o.pdb = &policyv1.PodDisruptionBudget{}
			obj = o.pdb
		case "networking.k8s.io/v1/NetworkPolicy":
			o.networkPolicy = &networkingv1.NetworkPolicy{}
			obj = o.networkPolicy
		case "monitoring.coreos.com/v1/ServiceMonitor":
			o.serviceMonitor = &monitoringv1.ServiceMonitor{}
			obj = o.serviceMonitor
		case "monitoring.coreos.com/v1/PrometheusRule":
			o.prometheusRule = &monitoringv1.PrometheusRule{}
			obj = o.prometheusRule
		default:
			t.Fatalf("%s: unexpected object %s", m.Name, gvk)
		}
		if err := decodeStrict(m.Content, obj); err != nil {
			t.Fatalf("%s: strict decode into %s: %v\n%s", m.Name, gvk, err, m.Content)
		}
	}
	for _, cm := range o.configMaps {
		if _, ok := cm.Data["heapdel.json"]; ok {
			o.dashboardConfig = cm
		}
	}
	sort.Strings(o.kinds)
	return o
}

// source returns the template a manifest came from, for messages.
func source(m releaseutil.Manifest) string {
	for _, line := range strings.Split(m.Content, "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			return s
		}
	}
	return m.Name
}

// TestStrictDecodeCatchesTypos proves the decoding used below fails on a
// misspelled field, so the other tests would catch one in a template.
func TestStrictDecodeCatchesTypos(t *testing.T) {
	doc := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n"
	if err := decodeStrict(doc, &appsv1.Deployment{}); err == nil {
		t.Fatal("a misspelled field (replica) decoded without error")
	}
	doc = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  minReadyseconds: 2\n"
	if err := decodeStrict(doc, &appsv1.Deployment{}); err == nil {
		t.Fatal("a field misspelled only in case (minReadyseconds) decoded without error")
	}
	doc = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 2\n  replicas: 3\n"
	if err := decodeStrict(doc, &appsv1.Deployment{}); err == nil {
		t.Fatal("a duplicate field decoded without error")
	}
	doc = "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: x}\nspec:\n  group: []\n"
	if err := decodeStrict(doc, &monitoringv1.PrometheusRule{}); err == nil {
		t.Fatal("a misspelled PrometheusRule field (group) decoded without error")
	}
}

// TestRenderCases renders every ci/ case and checks each object.
func TestRenderCases(t *testing.T) {
	c := loadChart(t)
	for name, vals := range ciCases(t) {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, c, vals)
			o := decodeAll(t, r)
			checkObjects(t, o, vals)
		})
	}
}

// checkObjects holds the rules every render must follow.
func checkObjects(t *testing.T, o objects, vals chartutil.Values) {
	t.Helper()
	if o.deployment == nil || o.service == nil || len(o.configMaps) == 0 {
		t.Fatalf("missing Deployment, Service or ConfigMap; got %v", o.kinds)
	}
	d := o.deployment
	pod := d.Spec.Template.Spec
	sel := d.Spec.Selector.MatchLabels

	// Labels and names.
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance"} {
		if sel[k] == "" {
			t.Errorf("Deployment selector lacks %s", k)
		}
	}
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
		if d.Labels[k] == "" {
			t.Errorf("Deployment lacks label %s", k)
		}
	}
	for k, v := range sel {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("pod template lacks selector label %s=%s", k, v)
		}
		if o.service.Spec.Selector[k] != v {
			t.Errorf("Service selector lacks %s=%s", k, v)
		}
	}
	if len(o.service.Spec.Selector) != len(sel) {
		t.Errorf("Service selector %v differs from the Deployment's %v", o.service.Spec.Selector, sel)
	}

	// Hardening.
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext is not hardened: %+v", psc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token")
	}
	if o.serviceAccount != nil && (o.serviceAccount.AutomountServiceAccountToken == nil || *o.serviceAccount.AutomountServiceAccountToken) {
		t.Error("the ServiceAccount does not set automountServiceAccountToken: false")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	ctr := pod.Containers[0]
	sc := ctr.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("the container has no securityContext")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Error("container runAsNonRoot is not true")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("container readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("container allowPrivilegeEscalation is not false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("container capabilities are not drop ALL: %+v", sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("container seccompProfile is not RuntimeDefault")
	}

	// Probes.
	probe := func(name string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no %s probe", name)
			return
		}
		if p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe is %s on port %s, want %s on metrics", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
		}
	}
	probe("startup", ctr.StartupProbe, "/healthz")
	probe("liveness", ctr.LivenessProbe, "/healthz")
	probe("readiness", ctr.ReadinessProbe, "/readyz")
	if len(ctr.Ports) != 1 || ctr.Ports[0].Name != "metrics" {
		t.Errorf("container ports %+v, want one named metrics", ctr.Ports)
	}
	if len(o.service.Spec.Ports) != 1 || o.service.Spec.Ports[0].TargetPort.String() != "metrics" || o.service.Spec.Ports[0].Port != ctr.Ports[0].ContainerPort {
		t.Errorf("Service ports %+v do not point at the metrics port %d", o.service.Spec.Ports, ctr.Ports[0].ContainerPort)
	}

	// Environment: the API key is a file, never a variable; every file a variable
	// names lies in a mounted Secret volume; every Secret reference names the
	// credentials Secret.
	env := containerEnv(t, ctr, o.configMaps)
	if _, ok := env["HEAPDEL_HEAP_API_KEY"]; ok {
		t.Error("HEAPDEL_HEAP_API_KEY is set: the API key must reach heapdel as a file")
	}
	if env["HEAPDEL_HEAP_API_KEY_FILE"] == "" {
		t.Error("HEAPDEL_HEAP_API_KEY_FILE is not set")
	}
	if env["HEAPDEL_HTTP_ADDR"] != fmt.Sprintf(":%d", ctr.Ports[0].ContainerPort) {
		t.Errorf("HEAPDEL_HTTP_ADDR is %q, not the container port %d", env["HEAPDEL_HTTP_ADDR"], ctr.Ports[0].ContainerPort)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	secretName := str(vals, "credentials", "existingSecret")
	if secretName == "" {
		secretName = d.Name
		if len(o.secrets) != 1 || o.secrets[0].Name != secretName {
			t.Errorf("no values-rendered Secret %s", secretName)
		}
	} else if len(o.secrets) != 0 {
		t.Errorf("a Secret is rendered although credentials.existingSecret is %s", secretName)
	}
	for _, e := range ctr.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			if e.ValueFrom.SecretKeyRef.Name != secretName {
				t.Errorf("%s comes from Secret %s, want %s", e.Name, e.ValueFrom.SecretKeyRef.Name, secretName)
			}
			if len(o.secrets) == 1 {
				if _, ok := o.secrets[0].Data[e.ValueFrom.SecretKeyRef.Key]; !ok {
					t.Errorf("%s names key %s, which the rendered Secret lacks", e.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
	}
	for _, fileVar := range []string{"HEAPDEL_HEAP_API_KEY_FILE", "HEAPDEL_IDENTITY_HASH_KEY_FILE", "HEAPDEL_NATS_CREDS", "HEAPDEL_NATS_NKEY", "HEAPDEL_NATS_TLS_CA", "HEAPDEL_NATS_TLS_CERT", "HEAPDEL_NATS_TLS_KEY"} {
		path, ok := env[fileVar]
		if !ok {
			continue
		}
		if !fileInSecretVolume(ctr, volumes, path, o.secrets) {
			t.Errorf("%s=%s is not a key of a mounted Secret volume", fileVar, path)
		}
	}
	for _, m := range ctr.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("volumeMount %s has no volume", m.Name)
		}
	}

	// Optional objects.
	if o.pdb != nil {
		if !mapsEqual(o.pdb.Spec.Selector.MatchLabels, sel) {
			t.Errorf("PodDisruptionBudget selector %v differs from %v", o.pdb.Spec.Selector.MatchLabels, sel)
		}
	}
	if o.networkPolicy != nil {
		checkNetworkPolicy(t, o.networkPolicy, sel)
	}
	if o.serviceMonitor != nil {
		sm := o.serviceMonitor
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoints %+v, want port metrics, path /metrics", sm.Spec.Endpoints)
		}
		if !mapsEqual(sm.Spec.Selector.MatchLabels, sel) {
			t.Errorf("ServiceMonitor selector %v differs from %v", sm.Spec.Selector.MatchLabels, sel)
		}
	}
	if o.prometheusRule != nil {
		checkPrometheusRule(t, o.prometheusRule)
	}
	if o.dashboardConfig != nil {
		checkDashboardConfigMap(t, o.dashboardConfig, vals)
	}

	// Names fit a DNS label.
	for _, n := range []string{d.Name, o.service.Name} {
		if len(n) > 63 {
			t.Errorf("name %q is longer than 63", n)
		}
	}
}

// containerEnv returns the container's environment: its ConfigMap's data, then
// env (values from Secrets as the placeholder "secret:<key>").
func containerEnv(t *testing.T, ctr corev1.Container, cms []*corev1.ConfigMap) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range ctr.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Errorf("envFrom %+v is not a ConfigMap", from)
			continue
		}
		found := false
		for _, cm := range cms {
			if cm.Name == from.ConfigMapRef.Name {
				found = true
				for k, v := range cm.Data {
					env[k] = v
				}
			}
		}
		if !found {
			t.Errorf("envFrom names ConfigMap %s, which is not rendered", from.ConfigMapRef.Name)
		}
	}
	for _, e := range ctr.Env {
		if _, dup := env[e.Name]; dup && strings.HasPrefix(e.Name, "HEAPDEL_") {
			t.Errorf("%s is set twice (ConfigMap and env)", e.Name)
		}
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Key
		default:
			env[e.Name] = e.Value
		}
	}
	return env
}

// fileInSecretVolume reports whether path is an item of a Secret volume mounted
// in ctr, and, for the values-rendered Secret, whether that Secret holds the key.
func fileInSecretVolume(ctr corev1.Container, volumes map[string]corev1.Volume, path string, rendered []*corev1.Secret) bool {
	for _, m := range ctr.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok || v.Secret == nil || !strings.HasPrefix(path, m.MountPath+"/") {
			continue
		}
		rel := strings.TrimPrefix(path, m.MountPath+"/")
		for _, item := range v.Secret.Items {
			if item.Path != rel {
				continue
			}
			for _, s := range rendered {
				if s.Name == v.Secret.SecretName {
					_, ok := s.Data[item.Key]
					return ok
				}
			}
			return true
		}
	}
	return false
}

func checkNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, sel map[string]string) {
	t.Helper()
	if !mapsEqual(np.Spec.PodSelector.MatchLabels, sel) {
		t.Errorf("NetworkPolicy podSelector %v differs from %v", np.Spec.PodSelector.MatchLabels, sel)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("NetworkPolicy policyTypes %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	// Egress: NATS, DNS (53 UDP and TCP), Heap, then only the extra rules; every
	// rule names its destinations and ports, so nothing is open to all.
	if len(np.Spec.Egress) < 3 {
		t.Fatalf("NetworkPolicy has %d egress rules, want NATS, DNS and Heap", len(np.Spec.Egress))
	}
	for i, r := range np.Spec.Egress {
		if len(r.To) == 0 || len(r.Ports) == 0 {
			t.Errorf("egress rule %d is open: to %v, ports %v", i, r.To, r.Ports)
		}
	}
	dns := np.Spec.Egress[1]
	var protos []string
	for _, p := range dns.Ports {
		protos = append(protos, string(*p.Protocol)+"/"+p.Port.String())
	}
	sort.Strings(protos)
	if !slices.Contains(protos, "TCP/53") || !slices.Contains(protos, "UDP/53") {
		t.Errorf("DNS egress ports %v, want TCP/53 and UDP/53 among them", protos)
	}
	for _, p := range protos {
		other := "TCP/" + strings.TrimPrefix(p, "UDP/")
		if strings.HasPrefix(p, "TCP/") {
			other = "UDP/" + strings.TrimPrefix(p, "TCP/")
		}
		if !slices.Contains(protos, other) {
			t.Errorf("DNS egress allows %s but not %s: large answers fall back to TCP", p, other)
		}
	}
}

// TestNetworkPolicyDNSDefaults checks the default DNS egress reaches NodeLocal
// DNSCache (169.254.20.10, host network) and OpenShift's DNS pods (port 5353), not
// only kube-dns pods on port 53.
func TestNetworkPolicyDNSDefaults(t *testing.T) {
	o := decodeAll(t, mustRender(t, loadChart(t), map[string]any{
		"credentials":   map[string]any{"existingSecret": "s"},
		"networkPolicy": map[string]any{"enabled": true},
	}))
	dns := o.networkPolicy.Spec.Egress[1]
	var protos []string
	for _, p := range dns.Ports {
		protos = append(protos, string(*p.Protocol)+"/"+p.Port.String())
	}
	sort.Strings(protos)
	if want := []string{"TCP/53", "TCP/5353", "UDP/53", "UDP/5353"}; !slices.Equal(protos, want) {
		t.Errorf("DNS egress ports %v, want %v", protos, want)
	}
	var nodeLocal, kubeDNS, openshift bool
	for _, peer := range dns.To {
		switch {
		case peer.IPBlock != nil && peer.IPBlock.CIDR == "169.254.20.10/32":
			nodeLocal = true
		case peer.PodSelector != nil && peer.PodSelector.MatchLabels["k8s-app"] == "kube-dns":
			kubeDNS = true
		case peer.NamespaceSelector != nil && peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "openshift-dns":
			openshift = true
		}
	}
	if !nodeLocal || !kubeDNS || !openshift {
		t.Errorf("DNS peers %+v: NodeLocal DNSCache %v, kube-dns %v, OpenShift DNS %v; want all", dns.To, nodeLocal, kubeDNS, openshift)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// str returns the string at path in vals, or "".
func str(vals map[string]any, path ...string) string {
	var cur any = vals
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[p]
	}
	s, _ := cur.(string)
	return s
}

// TestDefaultsWithoutCredentialsFail renders the chart's own defaults, which name
// no credentials: it must fail with a message that says what to set. (helm lint
// does not fail there: in lint mode, Helm logs `fail` instead of failing.)
func TestDefaultsWithoutCredentialsFail(t *testing.T) {
	c := loadChart(t)
	const want = "heapdel: no Heap credentials. Set credentials.existingSecret"
	_, err := render(t, c, releaseName, nil)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("render without credentials: got %v, want an error containing %q", err, want)
	}

	// The other combinations that cannot work fail clearly too.
	for name, tc := range map[string]struct {
		vals map[string]any
		want string
	}{
		"only app id": {
			vals: map[string]any{"credentials": map[string]any{"heapAppId": "123"}},
			want: "no Heap credentials",
		},
		"token auth without token": {
			vals: map[string]any{
				"credentials": map[string]any{"heapAppId": "123", "heapApiKey": "k"},
				"nats":        map[string]any{"auth": "token"},
			},
			want: "nats.auth is token but credentials.natsToken is empty",
		},
		"tls ca without ca": {
			vals: map[string]any{
				"credentials": map[string]any{"heapAppId": "123", "heapApiKey": "k"},
				"nats":        map[string]any{"tls": map[string]any{"ca": true}},
			},
			want: "nats.tls.ca is true but credentials.natsTlsCa is empty",
		},
		"embedded nats with two replicas": {
			vals: map[string]any{
				"credentials": map[string]any{"existingSecret": "s"},
				"nats":        map[string]any{"url": ""},
			},
			want: "pods would not share state",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, c, releaseName, tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestNamesTruncated checks the helpers keep every name within 63 characters.
func TestNamesTruncated(t *testing.T) {
	c := loadChart(t)
	long := strings.Repeat("a", 53) // Helm's longest release name
	vals := map[string]any{
		"credentials":      map[string]any{"existingSecret": "s"},
		"nameOverride":     "heapdel-with-a-rather-long-name-override",
		"grafanaDashboard": map[string]any{"enabled": true},
		"prometheusRule":   map[string]any{"enabled": true},
		"serviceMonitor":   map[string]any{"enabled": true},
		"networkPolicy":    map[string]any{"enabled": true},
	}
	r, err := render(t, c, long, vals)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.manifests {
		if len(m.Head.Metadata.Name) > 63 || strings.HasSuffix(m.Head.Metadata.Name, "-") {
			t.Errorf("%s name %q is not a valid 63-character label", m.Head.Kind, m.Head.Metadata.Name)
		}
		for k, v := range labelsOf(t, m.Content) {
			if len(v) > 63 {
				t.Errorf("%s label %s=%q is longer than 63", m.Head.Kind, k, v)
			}
		}
	}
	o := decodeAll(t, r)
	if got := o.deployment.Name; len(got) != 63 {
		t.Errorf("fullname %q (%d), want it truncated to 63", got, len(got))
	}
}

func labelsOf(t *testing.T, doc string) map[string]string {
	t.Helper()
	var m struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	return m.Metadata.Labels
}

// TestPodDisruptionBudgetAuto checks the budget is on by default with two
// replicas, off with one, and forced by true and false.
func TestPodDisruptionBudgetAuto(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		replicas int
		enabled  any
		want     bool
	}{
		{2, "auto", true},
		{1, "auto", false},
		{3, true, true},
		{3, false, false},
	} {
		t.Run(fmt.Sprintf("%d replicas, %v", tc.replicas, tc.enabled), func(t *testing.T) {
			r := mustRender(t, c, map[string]any{
				"replicaCount":        tc.replicas,
				"podDisruptionBudget": map[string]any{"enabled": tc.enabled},
				"credentials":         map[string]any{"existingSecret": "s"},
			})
			pdb := decodeAll(t, r).pdb
			if got := pdb != nil; got != tc.want {
				t.Errorf("PodDisruptionBudget rendered: %v, want %v", got, tc.want)
			}
			if pdb != nil && (pdb.Spec.UnhealthyPodEvictionPolicy == nil || *pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow) {
				t.Errorf("unhealthyPodEvictionPolicy %v, want AlwaysAllow: a crash-looping pod must not block a drain", pdb.Spec.UnhealthyPodEvictionPolicy)
			}
		})
	}
}

// TestPodDisruptionBudgetAllowsEvictions checks the chart refuses a budget that
// can never allow an eviction, which would hang every node drain, and accepts the
// ones that can.
func TestPodDisruptionBudgetAllowsEvictions(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		replicas int
		pdb      map[string]any
		ok       bool
	}{
		{1, map[string]any{"enabled": true}, false},
		{2, map[string]any{"minAvailable": 2}, false},
		{3, map[string]any{"minAvailable": 5}, false},
		{2, map[string]any{"maxUnavailable": 0}, false},
		{2, map[string]any{"maxUnavailable": "0%"}, false},
		{3, map[string]any{"minAvailable": "100%"}, false},
		{3, map[string]any{"minAvailable": "70%"}, false}, // rounds up to 3
		{3, map[string]any{"minAvailable": "50%"}, true},  // 2 of 3
		{2, map[string]any{"minAvailable": 1}, true},
		{1, map[string]any{"enabled": true, "maxUnavailable": 1}, true},
		{2, map[string]any{"maxUnavailable": "50%"}, true},
		{1, map[string]any{"enabled": "auto", "minAvailable": 1}, true}, // auto: no budget
	} {
		t.Run(fmt.Sprintf("%d replicas %v", tc.replicas, tc.pdb), func(t *testing.T) {
			_, err := render(t, c, releaseName, map[string]any{
				"replicaCount":        tc.replicas,
				"podDisruptionBudget": tc.pdb,
				"credentials":         map[string]any{"existingSecret": "s"},
			})
			switch {
			case tc.ok && err != nil:
				t.Fatalf("render: %v", err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "would never allow an eviction")):
				t.Fatalf("got %v, want the chart to refuse a budget that blocks every eviction", err)
			}
		})
	}
}

// TestNotesWarn checks NOTES.txt tells how to reach the metrics and warns about
// unsafe values.
func TestNotesWarn(t *testing.T) {
	c := loadChart(t)
	cases := ciCases(t)
	r := mustRender(t, c, cases["defaults"])
	for _, want := range []string{"port-forward service/heapdel 9090:9090", "/metrics"} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, r.notes)
		}
	}
	if strings.Contains(r.notes, "WARNINGS") {
		t.Errorf("the defaults with an existing Secret warn:\n%s", r.notes)
	}
	r = mustRender(t, c, cases["rendered-secret"])
	if !strings.Contains(r.notes, "rendered into a Secret") {
		t.Errorf("NOTES do not warn about values-rendered credentials:\n%s", r.notes)
	}
	r = mustRender(t, c, map[string]any{
		"credentials": map[string]any{"existingSecret": "s"},
		"config":      map[string]any{"heapBaseUrl": "http://heap.example.com"},
	})
	if !strings.Contains(r.notes, "config.heapBaseUrl is plain http") {
		t.Errorf("NOTES do not warn about a plain http base URL:\n%s", r.notes)
	}
}

// TestEverySettingConfigurable checks that, across the ci cases, the chart sets
// every HEAPDEL_* variable config/doc.go lists, and none that it does not list.
func TestEverySettingConfigurable(t *testing.T) {
	documented := documentedSettings(t)
	// Given as files instead (HEAPDEL_*_FILE), never as variables.
	notAsVariable := map[string]bool{"HEAPDEL_HEAP_API_KEY": true, "HEAPDEL_IDENTITY_HASH_KEY": true}
	c := loadChart(t)
	set := map[string]bool{}
	cases := ciCases(t)
	// The embedded server's data directory is set only without a NATS URL.
	cases["embedded"] = map[string]any{"replicaCount": 1, "nats": map[string]any{"url": ""}, "credentials": map[string]any{"existingSecret": "s"}}
	// Each NATS authentication method.
	for _, auth := range []string{"nkey", "userPassword"} {
		cases["auth-"+auth] = map[string]any{"nats": map[string]any{"auth": auth}, "credentials": map[string]any{"existingSecret": "s"}}
	}
	for name, vals := range cases {
		o := decodeAll(t, mustRender(t, c, vals))
		for k := range containerEnv(t, o.deployment.Spec.Template.Spec.Containers[0], o.configMaps) {
			if !strings.HasPrefix(k, "HEAPDEL_") {
				continue
			}
			if !documented[k] {
				t.Errorf("case %s sets %s, which config/doc.go does not list", name, k)
			}
			set[k] = true
		}
	}
	for k := range documented {
		if !set[k] && !notAsVariable[k] {
			t.Errorf("no case sets %s", k)
		}
	}
}

// documentedSettings returns the variables in config/doc.go's table.
func documentedSettings(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "config", "doc.go"))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		row, ok := strings.CutPrefix(line, "//\t") // the table, indented in the doc comment
		if f := strings.Fields(row); ok && len(f) > 0 && strings.HasPrefix(f[0], "HEAPDEL_") {
			vars[f[0]] = true
		}
	}
	if len(vars) < 20 {
		t.Fatalf("found only %d variables in config/doc.go", len(vars))
	}
	return vars
}

// TestDeterministic renders a case twice: the output must not change, or every
// upgrade would restart the pods.
func TestDeterministic(t *testing.T) {
	c := loadChart(t)
	vals := ciCases(t)["everything-on"]
	a, b := mustRender(t, c, vals), mustRender(t, c, vals)
	var sa, sb bytes.Buffer
	for i := range a.manifests {
		sa.WriteString(a.manifests[i].Content)
		sb.WriteString(b.manifests[i].Content)
	}
	if sa.String() != sb.String() {
		t.Error("two renders of the same values differ")
	}
}

// TestProxyAndCABundle checks the proxy values become the variables Go's HTTP
// client reads, the CA bundle is mounted where SSL_CERT_FILE points, and extra
// volumes are mounted.
func TestProxyAndCABundle(t *testing.T) {
	c := loadChart(t)
	for name, tc := range map[string]struct {
		caBundle map[string]any
		fromCM   bool
	}{
		"configMap": {map[string]any{"configMap": "corp-ca", "key": "bundle.pem"}, true},
		"secret":    {map[string]any{"secret": "corp-ca", "key": "bundle.pem"}, false},
	} {
		t.Run(name, func(t *testing.T) {
			o := decodeAll(t, mustRender(t, c, map[string]any{
				"credentials":       map[string]any{"existingSecret": "s"},
				"proxy":             map[string]any{"httpsProxy": "http://proxy:3128", "httpProxy": "http://proxy:3128", "noProxy": ".svc,10.0.0.0/8"},
				"caBundle":          tc.caBundle,
				"extraVolumes":      []any{map[string]any{"name": "extra", "emptyDir": map[string]any{}}},
				"extraVolumeMounts": []any{map[string]any{"name": "extra", "mountPath": "/extra"}},
			}))
			pod := o.deployment.Spec.Template.Spec
			ctr := pod.Containers[0]
			env := containerEnv(t, ctr, o.configMaps)
			for k, want := range map[string]string{"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://proxy:3128", "NO_PROXY": ".svc,10.0.0.0/8"} {
				if env[k] != want {
					t.Errorf("%s=%q, want %q", k, env[k], want)
				}
			}
			certFile := env["SSL_CERT_FILE"]
			found := false
			for _, m := range ctr.VolumeMounts {
				if !strings.HasPrefix(certFile, m.MountPath+"/") {
					continue
				}
				rel := strings.TrimPrefix(certFile, m.MountPath+"/")
				for _, v := range pod.Volumes {
					if v.Name != m.Name {
						continue
					}
					switch {
					case tc.fromCM && v.ConfigMap != nil && v.ConfigMap.Name == "corp-ca":
						found = len(v.ConfigMap.Items) == 1 && v.ConfigMap.Items[0].Key == "bundle.pem" && v.ConfigMap.Items[0].Path == rel
					case !tc.fromCM && v.Secret != nil && v.Secret.SecretName == "corp-ca":
						found = len(v.Secret.Items) == 1 && v.Secret.Items[0].Key == "bundle.pem" && v.Secret.Items[0].Path == rel
					}
				}
			}
			if !found {
				t.Errorf("SSL_CERT_FILE=%q is not key bundle.pem of the mounted %s corp-ca", certFile, name)
			}
			mounted := false
			for _, m := range ctr.VolumeMounts {
				mounted = mounted || (m.Name == "extra" && m.MountPath == "/extra")
			}
			if !mounted {
				t.Error("extraVolumeMounts is not mounted")
			}
		})
	}

	// Without the values nothing is set.
	o := decodeAll(t, mustRender(t, c, map[string]any{"credentials": map[string]any{"existingSecret": "s"}}))
	env := containerEnv(t, o.deployment.Spec.Template.Spec.Containers[0], o.configMaps)
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "SSL_CERT_FILE"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s is set by default", k)
		}
	}

	// Both sources at once are refused.
	_, err := render(t, c, releaseName, map[string]any{
		"credentials": map[string]any{"existingSecret": "s"},
		"caBundle":    map[string]any{"configMap": "a", "secret": "b"},
	})
	if err == nil || !strings.Contains(err.Error(), "caBundle.configMap and caBundle.secret are both set") {
		t.Errorf("got %v, want a refusal of two CA bundle sources", err)
	}
}

// TestDefaultResources checks the pods are not BestEffort by default: a memory
// request that covers the measured peak (about 150 MiB), a memory limit above it,
// and a CPU request without a CPU limit.
func TestDefaultResources(t *testing.T) {
	o := decodeAll(t, mustRender(t, loadChart(t), ciCases(t)["defaults"]))
	r := o.deployment.Spec.Template.Spec.Containers[0].Resources
	const peak = 150 << 20
	memReq, memLim := r.Requests.Memory(), r.Limits.Memory()
	if memReq.Value() < peak {
		t.Errorf("memory request %s is below the measured peak of 150 MiB", memReq)
	}
	if memLim.IsZero() || memLim.Cmp(*memReq) < 0 {
		t.Errorf("memory limit %s, want one at or above the request %s", memLim, memReq)
	}
	if r.Requests.Cpu().IsZero() {
		t.Error("no CPU request: the pod is scheduled without a CPU share")
	}
	if !r.Limits.Cpu().IsZero() {
		t.Errorf("CPU limit %s: a CFS quota throttles heapdel's bursts and its probes", r.Limits.Cpu())
	}
}

// TestSecretChangeRollsPods checks a changed chart-managed Secret changes the pod
// template, so `helm upgrade` rolls the pods onto the new credentials; an
// existingSecret is not the chart's to hash (heapdel re-reads the key file).
func TestSecretChangeRollsPods(t *testing.T) {
	c := loadChart(t)
	annotation := func(key string) string {
		o := decodeAll(t, mustRender(t, c, map[string]any{
			"credentials": map[string]any{"heapAppId": "123", "heapApiKey": key},
		}))
		return o.deployment.Spec.Template.Annotations["checksum/secret"]
	}
	a, b := annotation("old-key"), annotation("new-key")
	if a == "" || a == b {
		t.Errorf("checksum/secret %q then %q: a new API key does not roll the pods", a, b)
	}
	o := decodeAll(t, mustRender(t, c, map[string]any{"credentials": map[string]any{"existingSecret": "s"}}))
	if _, ok := o.deployment.Spec.Template.Annotations["checksum/secret"]; ok {
		t.Error("checksum/secret is set for an existingSecret the chart cannot read")
	}
}
