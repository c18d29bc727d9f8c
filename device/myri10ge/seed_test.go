package myri10ge_test

import (
	"os"
	"path/filepath"
	"testing"
)

// keepSeed keeps the committed seed file name of fuzz target in step with
// the test that builds it: with update it (re)writes body there, otherwise
// it reports a missing or stale file and the flag that rewrites it.
func keepSeed(t *testing.T, target, name, body string, update bool, flag string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	path := filepath.Join(dir, name)
	if !update {
		if b, err := os.ReadFile(path); err != nil || string(b) != body {
			t.Errorf("seed %s missing or stale (go test -run %s -%s): %v", path, t.Name(), flag, err)
		}
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
