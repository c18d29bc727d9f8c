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
	"github.com/myriemu/myriemu/device/myri10ge/abi"
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

// readmeRows returns the rows of the README table under heading, each
// with at least cells cells and its handler cell (index handler) checked
// and replaced by the bare name.
func readmeRows(t *testing.T, heading string, cells, handler int) [][]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	funcs := packageFuncs(t)
	var rows [][]string
	for _, r := range readmeTable(t, string(b), heading) {
		if len(r) < cells {
			t.Errorf("README row %q under %q: want at least %d cells", r, heading, cells)
			continue
		}
		r[handler] = handlerCell(t, funcs, r[0], r[handler])
		rows = append(rows, r)
	}
	return rows
}

func TestREADMEBAR0Map(t *testing.T) {
	var got, want []string
	for _, r := range readmeRows(t, "## BAR0", 6, 5) {
		got = append(got, strings.Join([]string{strings.ToLower(r[0]), strings.ToLower(r[1]), r[2], r[3], r[4], r[5]}, " | "))
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
	var got, want []string
	for _, r := range readmeRows(t, "## Commands", 3, 2) {
		if r[0] == "other" {
			if r[2] != "–" {
				t.Errorf("README row other: handler %s, want –", r[2])
			}
			continue
		}
		got = append(got, strings.Join(r[:3], " | "))
	}
	for c, h := range commands {
		if h != nil {
			want = append(want, strings.Join([]string{strconv.Itoa(c), abi.Cmd(c).String(), funcName(h)}, " | "))
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("README.md command table against commands (-code +README):\n%s", diff)
	}
}
