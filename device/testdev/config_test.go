package testdev

import "testing"

func TestParseOptions(t *testing.T) {
	if err := ParseOptions(nil); err != nil {
		t.Errorf("no options: %v", err)
	}
	const want = `unknown key "mac" (a testdev takes none)`
	if err := ParseOptions(map[string]string{"mac": "00:60:dd:00:00:01"}); err == nil || err.Error() != want {
		t.Errorf("mac=...: error %v, want %q", err, want)
	}
}
