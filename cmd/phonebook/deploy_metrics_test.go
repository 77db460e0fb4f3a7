package main

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/phonebook/phonebook/console"
	"github.com/phonebook/phonebook/store/storetest"
)

var (
	fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)
	// A PromQL identifier; quoted strings are removed first, so label
	// values do not count.
	identRE  = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	quotedRE = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// exportedMetrics lists the metric names a registry exports, including the
// series names of histograms and summaries.
func exportedMetrics(reg *prometheus.Registry) map[string]bool {
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	names := map[string]bool{}
	for d := range ch {
		if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
			for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
				names[m[1]+suffix] = true
			}
		}
	}
	return names
}

// metricsIn returns the phonebook_ metric names an expression uses.
func metricsIn(expr string) []string {
	var out []string
	for _, id := range identRE.FindAllString(quotedRE.ReplaceAllString(expr, ""), -1) {
		if strings.HasPrefix(id, "phonebook_") {
			out = append(out, id)
		}
	}
	return out
}

// deployExpressions reads every PromQL expression in deploy/: the alert
// rules and the dashboard's queries and variables.
func deployExpressions(t *testing.T) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile("../../deploy/prometheus/phonebook-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	b, err = os.ReadFile("../../deploy/grafana/phonebook.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			exprs["panel "+p.Title+" "+q.RefID] = q.Expr
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			exprs["variable "+v.Name] = v.Definition
		}
	}
	return exprs
}

func TestMetricsIn(t *testing.T) {
	got := metricsIn(`sum by (link) (rate(phonebook_smsc_submits_total{result="phonebook_not_a_metric"}[5m])) / phonebook_x:y`)
	if strings.Join(got, ",") != "phonebook_smsc_submits_total,phonebook_x:y" {
		t.Fatalf("got %v", got)
	}
}

// Every metric the alert rules and the dashboard name is one a full server
// exports (in cluster mode, so the cluster's metrics are there too): a
// renamed metric breaks this test, not a dashboard in production.
func TestDeployFilesNameExportedMetrics(t *testing.T) {
	cfg := testConfig(t)
	cfg.Node = "metrics-" + storetest.Name("")
	cfg.Database.Driver, cfg.Database.DSN = "mysql", storetest.MySQLDSN(t)
	cfg.Cluster.NATSURL, cfg.Cluster.Namespace = testNATS(t), storetest.Name("t")
	m := startMain(t, cfg)
	exported := exportedMetrics(m.reg)

	exprs := deployExpressions(t)
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found in deploy/", len(exprs))
	}
	used := map[string]bool{}
	for where, expr := range exprs {
		names := metricsIn(expr)
		if len(names) == 0 {
			t.Errorf("%s: no phonebook_ metric in %q", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] {
				t.Errorf("%s: %s is not a metric the server exports", where, n)
			}
		}
	}
	// So does the console's overview.
	for _, n := range console.SampledMetrics() {
		if !exported[n] {
			t.Errorf("the console reads %s, which the server does not export", n)
		}
	}
	var list []string
	for n := range used {
		list = append(list, n)
	}
	sort.Strings(list)
	t.Logf("deploy/ uses %d metrics: %s", len(list), strings.Join(list, " "))
}
