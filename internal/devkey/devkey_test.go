package devkey

import (
	"errors"
	"reflect"
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
	for _, tt := range []struct {
		opts    map[string]string
		want    conf
		wantErr string
	}{
		{nil, conf{}, ""},
		{map[string]string{"n": "1", "mode": "slow"}, conf{1, "S"}, ""},
		{map[string]string{"n": "8", "solo": "only"}, conf{8, "O"}, ""},
		{map[string]string{"n": "0"}, conf{}, "n=0: want 1..8"},
		{map[string]string{"n": "9"}, conf{}, "n=9: want 1..8"},
		{map[string]string{"n": "x"}, conf{}, "n=x: want 1..8"},
		{map[string]string{"mode": "Fast"}, conf{}, "mode=Fast: want fast, slow or off"},
		{map[string]string{"solo": "two"}, conf{}, "solo=two: want only"},
		{map[string]string{"speed": "1"}, conf{}, `unknown key "speed" (known: n, mode, solo)`},
		// Sorted: "mode" comes before "n" and "zz", whatever the map's order.
		{map[string]string{"zz": "1", "n": "0", "mode": "no"}, conf{}, "mode=no: want fast, slow or off"},
	} {
		var got conf
		err := table.Parse(&got, tt.opts)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if gotErr != tt.wantErr || (tt.wantErr == "" && got != tt.want) {
			t.Errorf("Parse(%v) = %+v, %q; want %+v, %q", tt.opts, got, gotErr, tt.want, tt.wantErr)
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
