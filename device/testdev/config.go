package testdev

import "github.com/myriemu/myriemu/internal/devkey"

// Key is a --device key of the testdev and its help text.
type Key = devkey.Key

// Keys are the keys ParseOptions takes: none so far.
var Keys = keyTable.Keys()

// keyTable is the testdev's key table, empty: it has nothing to set yet.
var keyTable = devkey.Table[struct{}]{Kind: "testdev"}

// ParseOptions checks a testdev's key=value options (see Keys); an
// unknown key is an error naming it.
func ParseOptions(opts map[string]string) error {
	return keyTable.Parse(&struct{}{}, opts)
}
