// Package faulttest builds armed fault sets for tests of the doors that
// consult package fault.
package faulttest

import (
	"testing"

	"github.com/myriemu/myriemu/fault"
)

// Set returns a set seeded with seed with every rule armed; a rule that
// does not parse or cannot be armed fails tb at once.
func Set(tb testing.TB, seed uint64, rules ...string) *fault.Set {
	tb.Helper()
	s := fault.NewSet(seed, nil)
	for _, text := range rules {
		r, err := fault.Parse(text)
		if err != nil {
			tb.Fatal(err)
		}
		if err := s.Add(r); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}
