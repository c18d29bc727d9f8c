package testdev

import "fmt"

// Key is a --device key of the testdev and its help text.
type Key struct{ Name, Help string }

// Keys are the keys ParseOptions takes: none so far.
var Keys []Key

// ParseOptions checks a testdev's key=value options (see Keys); an
// unknown key is an error naming it.
func ParseOptions(opts map[string]string) error {
	for k := range opts {
		return fmt.Errorf("unknown key %q (a testdev takes none)", k)
	}
	return nil
}
