package config

// This file holds how Load explains a bad config: the file, line and key of
// a YAML or type error, or the environment variable or flag that set it.

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"go.yaml.in/yaml/v3"
)

// explain turns the decoder's errors into one line per bad key, each with
// file and line: unknown keys, and values of the wrong type.
func explain(path string, raw []byte, err error) error {
	var leaves []*mapstructure.DecodeError
	decodeLeaves(err, &leaves)
	where := func(key string) string {
		if line := lineOf(raw, key); line > 0 {
			return fmt.Sprintf("%s:%d", path, line)
		}
		if env := envName(key); os.Getenv(env) != "" {
			return env
		}
		if path != "" {
			return "config " + path
		}
		return "config"
	}
	var lines []string
	for _, de := range leaves {
		name := de.Name()
		if strings.HasPrefix(name, "config.") {
			name = "" // mapstructure names the top level by its type
		}
		cause := de.Unwrap()
		if keys, ok := strings.CutPrefix(cause.Error(), "has invalid keys: "); ok {
			for _, k := range strings.Split(keys, ", ") {
				if name != "" {
					k = name + "." + k
				}
				lines = append(lines, fmt.Sprintf("%s: unknown key %q", where(k), k))
			}
			continue
		}
		msg := describe(cause)
		if strings.HasPrefix(cause.Error(), "time: ") {
			val := os.Getenv(envName(name))
			if n := nodeOf(raw, name); n != nil && n.Kind == yaml.ScalarNode {
				val = n.Value
			}
			msg = fmt.Sprintf("%q is not a duration (write 90s, 10m, 720h)", val)
		}
		lines = append(lines, fmt.Sprintf("%s: %s: %s", where(name), name, msg))
	}
	if len(lines) == 0 {
		if path != "" {
			return fmt.Errorf("config %s: %v", path, err)
		}
		return fmt.Errorf("config: %v", err)
	}
	sort.Strings(lines)
	return errors.New(strings.Join(lines, "\n"))
}

// decodeLeaves collects the decoder's errors that name one key.
func decodeLeaves(err error, out *[]*mapstructure.DecodeError) {
	switch x := err.(type) {
	case nil:
		return
	case interface{ Unwrap() []error }:
		for _, e := range x.Unwrap() {
			decodeLeaves(e, out)
		}
		return
	case *mapstructure.DecodeError:
		inner := x.Unwrap()
		var de *mapstructure.DecodeError
		if _, multi := inner.(interface{ Unwrap() []error }); multi || errors.As(inner, &de) {
			decodeLeaves(inner, out)
			return
		}
		*out = append(*out, x)
		return
	}
	decodeLeaves(errors.Unwrap(err), out)
}

// describe says what is wrong with a value, in words a user reads.
func describe(err error) string {
	var pe *mapstructure.ParseError
	var ue *mapstructure.UnconvertibleTypeError
	switch {
	case errors.As(err, &pe):
		return fmt.Sprintf("%q is not %s", fmt.Sprint(pe.Value), typeWords(pe.Expected.Type()))
	case errors.As(err, &ue):
		return fmt.Sprintf("expected %s, found %s", typeWords(ue.Expected.Type()), typeWords(reflect.TypeOf(ue.Value)))
	}
	return err.Error()
}

func typeWords(t reflect.Type) string {
	if t == nil {
		return "nothing"
	}
	if t == reflect.TypeOf(time.Duration(0)) {
		return "a duration (90s, 10m, 720h)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping of keys"
	}
	return "a " + t.String()
}

func pathOr(p string) string {
	if p == "" {
		return "config"
	}
	return p
}

// findKey walks YAML to a dotted key ("smsc.links[0].nmae"): its value,
// nil when the key is not there, and the line of the key or, when it is
// not there, of its nearest parent.
func findKey(raw []byte, key string) (*yaml.Node, int) {
	var doc yaml.Node
	if len(raw) == 0 || yaml.Unmarshal(raw, &doc) != nil || len(doc.Content) == 0 {
		return nil, 0
	}
	node, line := doc.Content[0], 0
	for _, seg := range strings.Split(key, ".") {
		name, idx := seg, -1
		if b := strings.Index(seg, "["); b >= 0 && strings.HasSuffix(seg, "]") {
			name = seg[:b]
			fmt.Sscanf(seg[b+1:len(seg)-1], "%d", &idx)
		}
		found := false
		if node.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(node.Content); i += 2 {
				if strings.EqualFold(node.Content[i].Value, name) {
					line, node, found = node.Content[i].Line, node.Content[i+1], true
					break
				}
			}
		}
		if !found {
			return nil, line
		}
		if idx >= 0 {
			if node.Kind != yaml.SequenceNode || idx >= len(node.Content) {
				return nil, line
			}
			node = node.Content[idx]
			line = node.Line
		}
	}
	return node, line
}

func nodeOf(raw []byte, key string) *yaml.Node {
	n, _ := findKey(raw, key)
	return n
}

func lineOf(raw []byte, key string) int {
	_, line := findKey(raw, key)
	return line
}
