package config

// This file holds what `config print` shows: the config with its secrets
// redacted, as YAML.

import (
	"reflect"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"go.yaml.in/yaml/v3"
)

// Redacted returns a copy with secrets replaced, for `config print`.
func (c Config) Redacted() Config {
	r := c
	if r.Database.DSN != "" {
		r.Database.DSN = redactDSN(r.Database.DSN)
	}
	if r.Verify.SecretKey != "" {
		r.Verify.SecretKey = "REDACTED"
	}
	if r.Admin.Token != "" {
		r.Admin.Token = "REDACTED"
	}
	r.SMSC.Links = append([]Link(nil), c.SMSC.Links...)
	for i := range r.SMSC.Links {
		if r.SMSC.Links[i].Password != "" {
			r.SMSC.Links[i].Password = "REDACTED"
		}
	}
	r.MMS.Links = append([]MMSLink(nil), c.MMS.Links...)
	for i := range r.MMS.Links {
		for _, p := range []*string{&r.MMS.Links[i].Password, &r.MMS.Links[i].VASPPassword} {
			if *p != "" {
				*p = "REDACTED"
			}
		}
	}
	return r
}

// redactDSN hides the password in user:pass@tcp(...)/db.
func redactDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		return dsn
	}
	cred := dsn[:at]
	if c := strings.Index(cred, ":"); c >= 0 {
		return cred[:c] + ":REDACTED" + dsn[at:]
	}
	return dsn
}

// YAML renders the configuration with its file keys.
func (c Config) YAML() ([]byte, error) {
	var m map[string]any
	if err := mapstructure.Decode(c, &m); err != nil {
		return nil, err
	}
	return yaml.Marshal(toPlain(m))
}

func toPlain(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = toPlain(e)
		}
		return x
	case time.Duration:
		return x.String()
	case []time.Duration:
		s := make([]string, len(x))
		for i, d := range x {
			s[i] = d.String()
		}
		return s
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Struct {
		var m map[string]any
		if mapstructure.Decode(v, &m) == nil {
			return toPlain(m)
		}
	}
	if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Struct {
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = toPlain(rv.Index(i).Interface())
		}
		return out
	}
	return v
}
