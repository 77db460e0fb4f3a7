package config

import (
	"math"
	"os"
	"reflect"
	"testing"
)

const examplePath = "phonebook.example.yaml"

// The shipped example loads, and spells every key at its default, but the
// ones computed at start (describedDefaults), which it shows commented out.
func TestExampleFileHasEveryKeyAtItsDefault(t *testing.T) {
	c, err := Load(examplePath, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	got, want := leafValues(&c), leafValues(&d)
	for key, w := range want {
		if _, described := describedDefaults[key]; described {
			continue
		}
		if nodeOf(raw, key) == nil {
			t.Errorf("%s: %s is not in the example (default %s)", examplePath, key, render(w))
			continue
		}
		if !sameDefault(got[key], w) {
			t.Errorf("%s:%d: %s is %s in the example, %s in the code", examplePath, lineOf(raw, key), key, render(got[key]), render(w))
		}
	}
}

// sameDefault compares values as the example writes them: an empty list is
// an empty list, and a float is written to four decimals.
func sameDefault(a, b reflect.Value) bool {
	switch {
	case a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0:
		return true
	case a.CanFloat():
		return math.Abs(a.Float()-b.Float()) <= 1e-4*math.Max(1, math.Abs(b.Float()))
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}
