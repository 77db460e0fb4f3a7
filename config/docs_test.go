package config

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// docs/configuration.md is the users' reference: its "## Keys" table must
// name every key the server knows, and nothing else, with the default the
// server really uses. The table's format, which this test reads:
//
//	| `key` | `default` | meaning |
//	| `key.a`, `key.b` | `default` | one row for several keys with the same default |
//	| `key` | `2160h` (90 days) | text after the backticked default is a comment |
//	| `key` | hostname | a default that is not a literal: see describedDefaults |
//
// A backticked default is written as in the YAML file or the environment:
// `20s`, `65536`, `0.5787` (compared to the digits written), `false`, `""`,
// `[]`, `[1m, 2m]`.
const docsPath = "../docs/configuration.md"

// describedDefaults are the keys whose default is computed at start rather
// than a literal: the words the docs use, and what the code's default value
// must be for the words to be true.
var describedDefaults = map[string]struct {
	words string
	ok    func(v reflect.Value) bool
}{
	"node": {"hostname", func(v reflect.Value) bool {
		h, _ := os.Hostname()
		return v.String() == h
	}},
	"verify.secret_key": {"(generated)", func(v reflect.Value) bool { return v.String() == "" }},
}

type docRow struct {
	line    int
	def     string // the backticked literal, or the words when not backticked
	literal bool
}

var (
	rowRE  = regexp.MustCompile("^\\|(.*?)\\|(.*?)\\|")
	tickRE = regexp.MustCompile("`([^`]*)`")
)

// parseKeysTable reads the table under "## Keys".
func parseKeysTable(doc []byte) (map[string]docRow, []string) {
	rows := map[string]docRow{}
	var problems []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(line) == "## Keys"
			continue
		}
		if !in || !strings.HasPrefix(line, "|") {
			continue
		}
		m := rowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		keyCell, defCell := strings.TrimSpace(m[1]), strings.TrimSpace(m[2])
		if keyCell == "key" || strings.Trim(keyCell, "-: ") == "" {
			continue // header and separator
		}
		keys := tickRE.FindAllStringSubmatch(keyCell, -1)
		if len(keys) == 0 {
			problems = append(problems, fmt.Sprintf("%s:%d: no `key` in the first column", docsPath, n))
			continue
		}
		row := docRow{line: n, def: defCell}
		if strings.HasPrefix(defCell, "`") {
			row.def, row.literal = tickRE.FindStringSubmatch(defCell)[1], true
		}
		for _, k := range keys {
			if prev, dup := rows[k[1]]; dup {
				problems = append(problems, fmt.Sprintf("%s:%d: %s documented again (first at line %d)", docsPath, n, k[1], prev.line))
			}
			rows[k[1]] = row
		}
	}
	return rows, problems
}

// leafValues returns every key of c with its value, the way Load sees them.
func leafValues(c *Config) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			key := t.Field(i).Tag.Get("mapstructure")
			if prefix != "" {
				key = prefix + "." + key
			}
			if f := v.Field(i); f.Kind() == reflect.Struct {
				walk(key, f)
			} else {
				out[key] = f
			}
		}
	}
	walk("", reflect.ValueOf(c).Elem())
	return out
}

// compareDocs lists every disagreement between the docs table and def.
func compareDocs(doc []byte, def Config) []string {
	rows, problems := parseKeysTable(doc)
	vals := leafValues(&def)
	for key, v := range vals {
		row, ok := rows[key]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: key %s (default %s) is not documented in the table under \"## Keys\"", docsPath, key, render(v)))
			continue
		}
		if d, ok := describedDefaults[key]; ok {
			if row.literal || row.def != d.words || !d.ok(v) {
				problems = append(problems, fmt.Sprintf("%s:%d: %s: the docs say %q, the code's default is %s (expected the words %q)", docsPath, row.line, key, row.def, render(v), d.words))
			}
			continue
		}
		if !row.literal {
			problems = append(problems, fmt.Sprintf("%s:%d: %s: default %q is not a `literal` (or add the key to describedDefaults)", docsPath, row.line, key, row.def))
			continue
		}
		if err := sameValue(row.def, v); err != nil {
			problems = append(problems, fmt.Sprintf("%s:%d: %s: the docs say `%s`, the code's default is %s: %v", docsPath, row.line, key, row.def, render(v), err))
		}
	}
	for key, row := range rows {
		if _, ok := vals[key]; !ok {
			problems = append(problems, fmt.Sprintf("%s:%d: %s is documented but is not a key the server knows", docsPath, row.line, key))
		}
	}
	return problems
}

func render(v reflect.Value) string {
	if v.Kind() == reflect.String {
		return strconv.Quote(v.String())
	}
	return fmt.Sprintf("%v", v.Interface())
}

var durationType = reflect.TypeOf(time.Duration(0))

// sameValue says whether the documented literal lit is the value v.
func sameValue(lit string, v reflect.Value) error {
	if v.Kind() == reflect.Slice {
		if !strings.HasPrefix(lit, "[") || !strings.HasSuffix(lit, "]") {
			return fmt.Errorf("a list is written [a, b]")
		}
		inner := strings.TrimSpace(lit[1 : len(lit)-1])
		var items []string
		if inner != "" {
			items = strings.Split(inner, ",")
		}
		if len(items) != v.Len() {
			return fmt.Errorf("%d items documented, %d in the code", len(items), v.Len())
		}
		for i, it := range items {
			if err := sameValue(strings.TrimSpace(it), v.Index(i)); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
		return nil
	}
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(lit)
		if err != nil {
			return err
		}
		if d != time.Duration(v.Int()) {
			return fmt.Errorf("%s != %s", d, time.Duration(v.Int()))
		}
	case v.Kind() == reflect.String:
		if lit == `""` {
			lit = ""
		}
		if lit != v.String() {
			return fmt.Errorf("different text")
		}
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(lit)
		if err != nil || b != v.Bool() {
			return fmt.Errorf("different")
		}
	case v.CanInt():
		n, err := strconv.ParseInt(lit, 10, 64)
		if err != nil || n != v.Int() {
			return fmt.Errorf("different")
		}
	case v.CanUint():
		n, err := strconv.ParseUint(lit, 10, 64)
		if err != nil || n != v.Uint() {
			return fmt.Errorf("different")
		}
	case v.CanFloat():
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil {
			return err
		}
		decimals := 0
		if i := strings.Index(lit, "."); i >= 0 {
			decimals = len(lit) - i - 1
		}
		if math.Abs(f-v.Float()) > 0.5*math.Pow10(-decimals) {
			return fmt.Errorf("different")
		}
	default:
		return fmt.Errorf("the test cannot compare a %s", v.Type())
	}
	return nil
}

func TestDocsAgreeWithDefaults(t *testing.T) {
	doc, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range compareDocs(doc, Default()) {
		t.Error(p)
	}
	known := knownKeys()
	d := Default()
	for key := range leafValues(&d) {
		if !known[key] {
			t.Errorf("%s: not a key Load accepts", key)
		}
	}
}

// The check catches a default changed in one place only, for every key:
// in the code (each key's default perturbed in turn) and in the docs (a
// documented default edited, a row removed, a row for an unknown key).
func TestDocsCheckCatchesOneSidedChanges(t *testing.T) {
	doc, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	if p := compareDocs(doc, Default()); len(p) > 0 {
		t.Skip("docs and code disagree already: TestDocsAgreeWithDefaults reports it")
	}
	t.Run("code changed", func(t *testing.T) {
		d := Default()
		for key := range leafValues(&d) {
			def := Default()
			perturb(t, leafValues(&def)[key])
			if !mentions(compareDocs(doc, def), key) {
				t.Errorf("%s: default changed in the code only, and the check did not notice", key)
			}
		}
	})
	t.Run("docs changed", func(t *testing.T) {
		for _, tc := range []struct{ key, from, to string }{
			{"relay.max_text_bytes", "| `16384` |", "| `16385` |"},
			{"relay.send_queue", "| `256` |", "| `1024` |"},
			{"relay.heartbeat", "| `20s` |", "| `25s` |"},
		} {
			row := rowOf(t, doc, tc.key)
			mutated := bytes.Replace(doc, []byte(row), []byte(strings.Replace(row, tc.from, tc.to, 1)), 1)
			if bytes.Equal(mutated, doc) {
				t.Fatalf("%s: row %q does not contain %q", tc.key, row, tc.from)
			}
			if !mentions(compareDocs(mutated, Default()), tc.key) {
				t.Errorf("%s: documented default changed, and the check did not notice", tc.key)
			}
		}
	})
	t.Run("row removed", func(t *testing.T) {
		row := rowOf(t, doc, "relay.idle_timeout")
		if !mentions(compareDocs(bytes.Replace(doc, []byte(row+"\n"), nil, 1), Default()), "relay.idle_timeout") {
			t.Error("an undocumented key went unnoticed")
		}
	})
	t.Run("unknown key documented", func(t *testing.T) {
		row := rowOf(t, doc, "relay.idle_timeout")
		extra := row + "\n| `relay.offline_after` | `5m` | gone |"
		if !mentions(compareDocs(bytes.Replace(doc, []byte(row), []byte(extra), 1), Default()), "relay.offline_after") {
			t.Error("a documented key the server does not know went unnoticed")
		}
	})
}

func rowOf(t *testing.T, doc []byte, key string) string {
	t.Helper()
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "| `"+key+"`") {
			return line
		}
	}
	t.Fatalf("no row for %s", key)
	return ""
}

func mentions(problems []string, key string) bool {
	for _, p := range problems {
		if strings.Contains(p, " "+key+":") || strings.Contains(p, " "+key+" ") {
			return true
		}
	}
	return false
}

// perturb changes v to another value of its type.
func perturb(t *testing.T, v reflect.Value) {
	switch {
	case v.Kind() == reflect.Slice:
		v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
	case v.Kind() == reflect.String:
		v.SetString(v.String() + "x")
	case v.Kind() == reflect.Bool:
		v.SetBool(!v.Bool())
	case v.CanInt():
		v.SetInt(v.Int() + 1)
	case v.CanUint():
		v.SetUint(v.Uint() + 1)
	case v.CanFloat():
		v.SetFloat(v.Float()*2 + 1)
	default:
		t.Fatalf("cannot perturb a %s", v.Type())
	}
}

// The other pages name keys too: every `section.key` they write must be a
// key the server knows (or a section of keys), and a default they quote as
// "`key` (default `value`)" or "the default `key` of `value`" must be the
// code's.
var (
	keyMentionRE = regexp.MustCompile("`([a-z_]+\\.[a-z0-9_.]+)`") // checked when the first part is a section
	quotedDefRE  = regexp.MustCompile("`([a-z_]+\\.[a-z0-9_.]+)`(?:\\s+\\(|,\\s+)default\\s+`([^`]+)`|the\\s+default\\s+`([a-z_]+\\.[a-z0-9_.]+)`\\s+of\\s+`([^`]+)`")
)

// checkPage lists the wrong keys and defaults one page names.
func checkPage(page, text string) (problems []string, defaults int) {
	d := Default()
	vals := leafValues(&d)
	known := knownKeys()
	isSection := func(k string) bool {
		for key := range known {
			if strings.HasPrefix(key, k+".") {
				return true
			}
		}
		return false
	}
	for n, line := range strings.Split(text, "\n") {
		for _, m := range keyMentionRE.FindAllStringSubmatch(line, -1) {
			k := m[1]
			if section, _, _ := strings.Cut(k, "."); !isSection(section) {
				continue // not a configuration key: a Go name, a metric, a file
			}
			if ext := filepath.Ext(k); ext == ".json" || ext == ".yaml" || ext == ".md" || ext == ".db" {
				continue // a file name such as phone.json
			}
			if !known[k] && !isSection(k) {
				problems = append(problems, fmt.Sprintf("%s:%d: `%s` is not a configuration key", page, n+1, k))
			}
		}
	}
	// Quoted defaults may break across lines.
	for _, ix := range quotedDefRE.FindAllStringSubmatchIndex(text, -1) {
		var k, lit string
		if ix[2] >= 0 {
			k, lit = text[ix[2]:ix[3]], text[ix[4]:ix[5]]
		} else {
			k, lit = text[ix[6]:ix[7]], text[ix[8]:ix[9]]
		}
		v, ok := vals[k]
		if _, described := describedDefaults[k]; !ok || described {
			continue // an unknown key is reported above
		}
		defaults++
		if err := sameValue(lit, v); err != nil {
			line := strings.Count(text[:ix[0]], "\n") + 1
			problems = append(problems, fmt.Sprintf("%s:%d: %s: the page says default `%s`, the code's default is %s: %v", page, line, k, lit, render(v), err))
		}
	}
	return problems, defaults
}

func TestOtherDocsNameKnownKeysAndTheirDefaults(t *testing.T) {
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, "../README.md")
	quoted := 0
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		problems, n := checkPage(page, string(b))
		quoted += n
		for _, p := range problems {
			t.Error(p)
		}
	}
	t.Logf("%d quoted defaults checked", quoted)
	if quoted < 10 {
		t.Errorf("only %d quoted defaults found: has the notation changed?", quoted)
	}
	// And it notices a wrong one.
	for _, bad := range []string{
		"the limit is `relay.max_text_bytes` (default `4096`) bytes",
		"at most the default `relay.send_queue` of `1024`",
		"`relay.fallback_grace` (default `5m`)",
	} {
		if p, _ := checkPage("x.md", bad); len(p) == 0 {
			t.Errorf("%q: not noticed", bad)
		}
	}
}
