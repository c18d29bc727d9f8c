// Package devkey parses a device kind's --device key=value options against
// the table of keys it documents, so that every kind reads its keys in the
// same order and words the same errors the same way.
package devkey

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Key is a --device key and its help text.
type Key struct{ Name, Help string }

// Field is one key of a kind whose options fill a C: its name and help,
// and how a value sets it. Set returns what the key wants ("want 1..16")
// when the value is bad; Parse puts "key=value: " before it.
type Field[C any] struct {
	Name, Help string
	Set        func(c *C, v string) error
}

// Table is a device kind's keys, in the order its help lists them.
type Table[C any] struct {
	Kind   string // the kind's name, for the error of a kind without keys
	Fields []Field[C]
}

// Keys returns the names and help of the table's keys, in order.
func (t Table[C]) Keys() []Key {
	keys := make([]Key, len(t.Fields))
	for i, f := range t.Fields {
		keys[i] = Key{f.Name, f.Help}
	}
	return keys
}

// Parse sets c from opts. Keys are taken in sorted order, so that of
// several bad keys the one reported is always the same. An unknown key's
// error lists the known ones.
func (t Table[C]) Parse(c *C, opts map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		v := opts[k]
		i := slices.IndexFunc(t.Fields, func(f Field[C]) bool { return f.Name == k })
		if i < 0 {
			return t.unknown(k)
		}
		if err := t.Fields[i].Set(c, v); err != nil {
			return fmt.Errorf("%s=%s: %w", k, v, err)
		}
	}
	return nil
}

func (t Table[C]) unknown(k string) error {
	if len(t.Fields) == 0 {
		return fmt.Errorf("unknown key %q (a %s takes none)", k, t.Kind)
	}
	names := make([]string, len(t.Fields))
	for i, f := range t.Fields {
		names[i] = f.Name
	}
	return fmt.Errorf("unknown key %q (known: %s)", k, strings.Join(names, ", "))
}

// Int returns the Set of an integer key: a decimal number in lo..hi is
// passed to set; anything else is the error want (e.g. "want 1..16").
func Int[C any](lo, hi int, want string, set func(c *C, n int)) func(*C, string) error {
	return func(c *C, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return errors.New(want)
		}
		set(c, n)
		return nil
	}
}

// Choice is one value an enumerated key takes.
type Choice[V any] struct {
	Name  string
	Value V
}

// OneOf returns the Set of an enumerated key: one of the choices' names
// passes its value to set; anything else is the error "want a, b or c",
// the names in the order given. It takes at least one choice.
func OneOf[C, V any](set func(c *C, v V), choices ...Choice[V]) func(*C, string) error {
	names := make([]string, len(choices))
	for i, ch := range choices {
		names[i] = ch.Name
	}
	want := "want " + names[len(names)-1]
	if len(names) > 1 {
		want = "want " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	}
	return func(c *C, v string) error {
		for _, ch := range choices {
			if v == ch.Name {
				set(c, ch.Value)
				return nil
			}
		}
		return errors.New(want)
	}
}
