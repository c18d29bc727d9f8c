package fault

import (
	"errors"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		in   string
		want string // canonical form
	}{
		{"r1: dma.read=fail", "r1: dma.read=fail"},
		{"r1:dma.read=fail;probability=10;times=3", "r1: dma.read=fail; probability=10; times=3"},
		{"m: msi.raise=drop; vector=0; interval=10; after=100", "m: msi.raise=drop; vector=0; interval=10; after=100"},
		{"w: wire.link=flap(down=200ms); every=1s; times=20", "w: wire.link=flap(down=200ms); times=20; every=1s"},
		{"w: wire.frame=loss; probability=2.5%; seed=7", "w: wire.frame=loss; probability=2.5; seed=7"},
		{"d: dma.iova=unmapped; iova=0x1000..0x1fff", "d: dma.iova=unmapped; iova=0x1000..0x1fff"},
		{"s1: msi.raise=none; state=1; new_state=2", "s1: msi.raise=none; state=1; new_state=2"},
		{"t: fw.cmd=error(range); opcode=MXGEFW_CMD_SET_MTU; once", "t: fw.cmd=error(code=range); opcode=MXGEFW_CMD_SET_MTU; times=1"},
		{"t: fw.cmd=slow(delay=16ms); opcode=5", "t: fw.cmd=slow(delay=16ms); opcode=5"},
		{"x: dma.read=poison(mask=0x80, offset=3);", "x: dma.read=poison(mask=0x80, offset=3)"},
		{"p: pci.cfg=surprise-remove; device=myri0", "p: pci.cfg=surprise-remove; device=myri0"},
	}
	for _, tt := range tests {
		r, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := r.String(); got != tt.want {
			t.Errorf("Parse(%q) = %q, want %q", tt.in, got, tt.want)
		}
		// The canonical form parses back to itself.
		r2, err := Parse(r.String())
		if err != nil || r2.String() != r.String() {
			t.Errorf("round trip of %q: %v, %q", r.String(), err, r2)
		}
	}
}

func TestParseErrorsNameTheColumn(t *testing.T) {
	tests := []struct {
		in  string
		col int
		msg string
	}{
		{"", 1, "rule id"},
		{"r1 dma.read=fail", 4, `want ':'`},
		{"r1: disk.read=fail", 5, "unknown door"},
		{"r1: dma.sideways=fail", 9, "no point"},
		{"r1: dma.read=explode", 14, "no action"},
		{"r1: dma.read=fail; probability=200", 32, "percentage"},
		{"r1: dma.read=fail; bogus=1", 20, "unknown clause"},
		{"r1: dma.read=fail; vector=1", 20, "does not report vector"},
		{"r1: wire.frame=bad(fatal)", 20, "not one of"},
		{"r1: wire.frame=bad(kind=runt, kind=oversize)", 31, "twice"},
		{"r1: msi.raise=drop(x=1)", 20, "takes no argument"},
		{"r1: dma.read=fail; times=2; once", 29, "once and times"},
		{"r1: dma.read=fail; iova=9..1", 25, "lo <= hi"},
		{"r1: dma.read=fail; times=", 26, "needs a value"},
		{"r1: dma.read=fail trailing", 19, `want ';'`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, want a *SyntaxError", tt.in, err)
			continue
		}
		if se.Col != tt.col || !strings.Contains(se.Msg, tt.msg) {
			t.Errorf("Parse(%q): column %d %q, want column %d containing %q", tt.in, se.Col, se.Msg, tt.col, tt.msg)
		}
	}
}

func TestParseFile(t *testing.T) {
	rules, err := ParseFile("# comment\n\nr1: dma.read=fail; once\n  r2: msi.raise=drop\n")
	if err != nil || len(rules) != 2 {
		t.Fatalf("ParseFile = %d rules, %v", len(rules), err)
	}
	_, err = ParseFile("r1: dma.read=fail\nr2: msi.raise=drop; vector=x\n")
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 2 || !strings.Contains(err.Error(), "line 2 column") {
		t.Errorf("bad second line: %v", err)
	}
	if _, err := ParseFile("r1: dma.read=fail\nr1: msi.raise=drop\n"); err == nil {
		t.Error("duplicate ids accepted")
	}
}

// Every catalogue entry is reachable through its rule spelling.
func TestCatalogueSpellings(t *testing.T) {
	wired := 0
	for _, k := range Kinds() {
		if k.Pending {
			continue
		}
		wired++
		text := "x: " + k.Door.String() + "." + k.Point + "=" + k.Action
		r, err := Parse(text)
		if err != nil {
			t.Errorf("%s: %v", k.Name, err)
			continue
		}
		if r.Kind.String() != k.Name {
			t.Errorf("%s parses as %s", text, r.Kind)
		}
	}
	if wired < 30 {
		t.Errorf("%d fault types wired to their doors, want at least 30", wired)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"r1: dma.read=fail",
		"t: fw.cmd=error(range); opcode=MXGEFW_CMD_SET_MTU; once",
		"w: wire.link=flap(down=200ms); every=1s; times=20; state=1; new_state=2",
		"d: dma.iova=unmapped; iova=0x1000..0x1fff; probability=50; seed=3",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Col < 1 || se.Col > len(s)+1 {
				t.Fatalf("Parse(%q): error %v has no column inside the rule", s, err)
			}
			return
		}
		// A rule that parses prints a canonical form that parses to itself.
		r2, err := Parse(r.String())
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", r.String(), s, err)
		}
		if r2.String() != r.String() {
			t.Fatalf("canonical form not stable: %q then %q", r.String(), r2.String())
		}
		if r.Kind >= numKinds || r.Door >= numDoors {
			t.Fatalf("out-of-range kind/door from %q", s)
		}
	})
}
