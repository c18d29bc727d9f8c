package myri10ge

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// README.md's BAR0 map and command table are the way in for a reader:
// every row must be the code's row, in the code's order, and name a
// handler that exists (README, then table, then handler: two hops).

// readmeTable returns the body rows of the first Markdown table after the
// heading that starts with heading, split into trimmed cells.
func readmeTable(t *testing.T, readme, heading string) [][]string {
	t.Helper()
	i := strings.Index(readme, "\n"+heading)
	if i < 0 {
		t.Fatalf("README.md has no heading %q", heading)
	}
	var rows [][]string
	inTable := false
	for _, line := range strings.Split(readme[i+1:], "\n")[1:] {
		if strings.HasPrefix(line, "#") {
			break
		}
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := regexp.MustCompile(`[^\\]\|`).Split(" "+strings.TrimSpace(line), -1)
		cells = cells[1 : len(cells)-1] // outside the outer pipes
		for k := range cells {
			cells[k] = strings.TrimSpace(strings.ReplaceAll(cells[k], `\|`, "|"))
		}
		rows = append(rows, cells)
	}
	if len(rows) < 2 {
		t.Fatalf("README.md: no table under %q", heading)
	}
	return rows[2:] // header and separator
}

// funcName is the name of the function or method fn is, without its
// package and receiver; "–" for nil.
func funcName(fn any) string {
	v := reflect.ValueOf(fn)
	if v.IsNil() {
		return "–"
	}
	n := runtime.FuncForPC(v.Pointer()).Name()
	return n[strings.LastIndex(n, ".")+1:]
}

// packageFuncs returns the names of the functions and methods declared in
// the package's non-test files.
func packageFuncs(t *testing.T) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	funcs := map[string]bool{}
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, d := range f.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok {
					funcs[fd.Name.Name] = true
				}
			}
		}
	}
	return funcs
}

// handlerCell checks a README handler cell: "–" or one `name` that the
// package declares. It returns the name.
func handlerCell(t *testing.T, funcs map[string]bool, row, cell string) string {
	t.Helper()
	if cell == "–" {
		return cell
	}
	name := strings.Trim(cell, "`")
	if name == cell || !funcs[name] {
		t.Errorf("README row %s: handler %s is not a function of the package", row, cell)
	}
	return name
}

func TestREADMEBAR0Map(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	funcs := packageFuncs(t)
	var got, want []string
	for _, r := range readmeTable(t, string(b), "## BAR0") {
		if len(r) < 6 {
			t.Errorf("README BAR0 row %q: want offset, stride, count, row, fires on, handler", r)
			continue
		}
		h := handlerCell(t, funcs, r[3], r[5])
		got = append(got, strings.Join([]string{strings.ToLower(r[0]), strings.ToLower(r[1]), r[2], r[3], r[4], h}, " | "))
	}
	for _, tr := range bar0Triggers {
		fires := "any store"
		if tr.fire != fireAny {
			fires = fmt.Sprintf("+%#x", tr.fire)
		}
		want = append(want, strings.Join([]string{fmt.Sprintf("0x%06x", tr.base), fmt.Sprintf("%#x", tr.stride),
			strconv.Itoa(tr.count), tr.name, fires, funcName(tr.handler)}, " | "))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("README.md BAR0 table against bar0Triggers (-code +README):\n%s", diff)
	}
}

func TestREADMECommands(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	funcs := packageFuncs(t)
	var got, want []string
	for _, r := range readmeTable(t, string(b), "## Commands") {
		if len(r) < 3 {
			t.Errorf("README command row %q: want #, command, handler", r)
			continue
		}
		h := handlerCell(t, funcs, r[1], r[2])
		if r[0] == "other" {
			if h != "–" {
				t.Errorf("README row other: handler %s, want –", h)
			}
			continue
		}
		got = append(got, strings.Join([]string{r[0], r[1], h}, " | "))
	}
	for c, h := range commands {
		if h != nil {
			want = append(want, strings.Join([]string{strconv.Itoa(c), Cmd(c).String(), funcName(h)}, " | "))
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("README.md command table against commands (-code +README):\n%s", diff)
	}
}
