package devkey

import (
	"errors"
	"reflect"
	"slices"
	"testing"
)

type conf struct {
	n    int
	mode string
}

var table = Table[conf]{Kind: "thing", Fields: []Field[conf]{
	{Name: "n", Help: "a count", Set: Int(1, 8, "want 1..8", func(c *conf, n int) { c.n = n })},
	{Name: "mode", Help: "how", Set: OneOf(func(c *conf, m string) { c.mode = m },
		Choice[string]{"fast", "F"}, Choice[string]{"slow", "S"}, Choice[string]{"off", "-"})},
	{Name: "solo", Help: "one choice", Set: OneOf(func(c *conf, m string) { c.mode = m }, Choice[string]{"only", "O"})},
}}

func TestParse(t *testing.T) {
	var got conf
	if err := table.Parse(&got, map[string]string{"n": "8", "mode": "slow"}); err != nil || got != (conf{8, "S"}) {
		t.Errorf("n=8,mode=slow: %+v, %v; want {8 S}", got, err)
	}
	const unknown = `unknown key "speed" (known: n, mode, solo)`
	if err := table.Parse(&conf{}, map[string]string{"speed": "1"}); err == nil || err.Error() != unknown {
		t.Errorf("speed=1: error %v, want %q", err, unknown)
	}
	// Sorted: "mode" comes before "n" and "zz", whatever the map's order.
	const first = "mode=no: want fast, slow or off"
	for range 20 {
		if err := table.Parse(&conf{}, map[string]string{"zz": "1", "n": "0", "mode": "no"}); err == nil || err.Error() != first {
			t.Fatalf("three bad keys: error %v, want %q", err, first)
		}
	}
}

// TestSetters feeds each setter of table its values directly: what it
// sets, or the error Parse puts after "key=value: ".
func TestSetters(t *testing.T) {
	for _, tt := range []struct {
		key, v  string
		want    conf
		wantErr string
	}{
		{"n", "1", conf{n: 1}, ""},
		{"n", "8", conf{n: 8}, ""},
		{"n", "0", conf{}, "want 1..8"},
		{"n", "9", conf{}, "want 1..8"},
		{"n", "x", conf{}, "want 1..8"},
		{"mode", "off", conf{mode: "-"}, ""},
		{"mode", "Fast", conf{}, "want fast, slow or off"},
		{"solo", "only", conf{mode: "O"}, ""},
		{"solo", "two", conf{}, "want only"},
	} {
		var got conf
		i := slices.IndexFunc(table.Fields, func(f Field[conf]) bool { return f.Name == tt.key })
		err := table.Fields[i].Set(&got, tt.v)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if gotErr != tt.wantErr || got != tt.want {
			t.Errorf("%s=%s: %+v, %q; want %+v, %q", tt.key, tt.v, got, gotErr, tt.want, tt.wantErr)
		}
	}
}

func TestParseWrapsSetError(t *testing.T) {
	errBad := errors.New("want something else")
	tb := Table[conf]{Fields: []Field[conf]{{Name: "k", Set: func(*conf, string) error { return errBad }}}}
	if err := tb.Parse(&conf{}, map[string]string{"k": "v"}); !errors.Is(err, errBad) || err.Error() != "k=v: want something else" {
		t.Errorf("error %v, want k=v: wrapping %v", err, errBad)
	}
}

func TestNoKeys(t *testing.T) {
	tb := Table[struct{}]{Kind: "testdev"}
	if err := tb.Parse(&struct{}{}, nil); err != nil {
		t.Errorf("no options: %v", err)
	}
	const want = `unknown key "a" (a testdev takes none)`
	if err := tb.Parse(&struct{}{}, map[string]string{"b": "1", "a": "1"}); err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
	if k := tb.Keys(); len(k) != 0 {
		t.Errorf("Keys() = %v, want none", k)
	}
}

func TestKeys(t *testing.T) {
	want := []Key{{"n", "a count"}, {"mode", "how"}, {"solo", "one choice"}}
	if got := table.Keys(); !reflect.DeepEqual(got, want) {
		t.Errorf("Keys() = %v, want %v", got, want)
	}
}
