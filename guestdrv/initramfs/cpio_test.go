package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// entry is one parsed archive member.
type entry struct {
	Name         string
	Mode         uint32
	Nlink        uint32
	RMajor       uint32
	RMinor       uint32
	Data         string
	HeaderOffset int
}

// parse is an independent newc reader: it checks magic, hex fields,
// NUL-terminated names, 4-byte alignment of header, name and data, and the
// trailer at the end.
func parse(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("header at %d not 4-aligned", off)
		}
		if off+headerSize > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+headerSize]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		mode, nlink, size, rmaj, rmin, namesize := field(1), field(4), field(6), field(9), field(10), field(11)
		nameStart := off + headerSize
		name := b[nameStart : nameStart+int(namesize)]
		if name[len(name)-1] != 0 {
			t.Fatalf("name at %d not NUL-terminated", nameStart)
		}
		dataStart := nameStart + int(namesize)
		dataStart += pad4(dataStart)
		data := b[dataStart : dataStart+int(size)]
		e := entry{Name: string(name[:len(name)-1]), Mode: mode, Nlink: nlink, RMajor: rmaj, RMinor: rmin,
			Data: string(data), HeaderOffset: off}
		off = dataStart + int(size)
		off += pad4(off)
		if e.Name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	steps := []error{
		w.Dir("bin", 0o755),
		w.File("bin/busybox", 0o755, []byte("ELF...")),
		w.Symlink("bin/sh", "busybox"),
		w.File("/init", 0o755, []byte("#!/bin/sh\n")),         // leading slash is dropped
		w.File("lib/modules/dca.ko.xz", 0o644, []byte("xyz")), // parents are created
		w.CharDev("dev/console", 0o600, 5, 1),
		w.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	got := parse(t, buf.Bytes())
	for i := range got {
		got[i].HeaderOffset = 0
	}
	want := []entry{
		{Name: "bin", Mode: 0o040755, Nlink: 2},
		{Name: "bin/busybox", Mode: 0o100755, Nlink: 1, Data: "ELF..."},
		{Name: "bin/sh", Mode: 0o120777, Nlink: 1, Data: "busybox"},
		{Name: "init", Mode: 0o100755, Nlink: 1, Data: "#!/bin/sh\n"},
		{Name: "lib", Mode: 0o040755, Nlink: 2},
		{Name: "lib/modules", Mode: 0o040755, Nlink: 2},
		{Name: "lib/modules/dca.ko.xz", Mode: 0o100644, Nlink: 1, Data: "xyz"},
		{Name: "dev", Mode: 0o040755, Nlink: 2},
		{Name: "dev/console", Mode: 0o020600, Nlink: 1, RMajor: 5, RMinor: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
}

// Every combination of name and data length mod 4 must stay aligned.
func TestWriterAlignment(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	var want []string
	for n := 1; n <= 8; n++ {
		for d := 0; d <= 8; d++ {
			name := fmt.Sprintf("%0*d", n, d)
			name = name[len(name)-n:]
			if n == 1 {
				name = fmt.Sprintf("d%d", d)
			}
			name = fmt.Sprintf("n%d/%s", n, name)
			if err := w.File(name, 0o644, bytes.Repeat([]byte{'x'}, d)); err != nil {
				t.Fatal(err)
			}
			want = append(want, name)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range parse(t, buf.Bytes()) {
		if e.Mode&modeRegular != 0 && e.Mode&modeDir == 0 {
			got = append(got, e.Name)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestWriterErrors(t *testing.T) {
	tests := []struct {
		name string
		run  func(w *Writer) error
	}{
		{"empty name", func(w *Writer) error { return w.File("", 0o644, nil) }},
		{"dot", func(w *Writer) error { return w.Dir(".", 0o755) }},
		{"dotdot", func(w *Writer) error { return w.File("../etc/passwd", 0o644, nil) }},
		{"unclean", func(w *Writer) error { return w.File("a//b", 0o644, nil) }},
		{"nul", func(w *Writer) error { return w.File("a\x00b", 0o644, nil) }},
		{"twice", func(w *Writer) error {
			_ = w.File("a", 0o644, nil)
			return w.File("a", 0o644, nil)
		}},
		{"parent is a file", func(w *Writer) error {
			_ = w.File("a", 0o644, nil)
			return w.File("a/b", 0o644, nil)
		}},
		{"empty symlink", func(w *Writer) error { return w.Symlink("a", "") }},
		{"after close", func(w *Writer) error {
			_ = w.Close()
			return w.File("a", 0o644, nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(NewWriter(io.Discard)); err == nil {
				t.Error("no error")
			}
		})
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestWriterWriteErrorSticks(t *testing.T) {
	w := NewWriter(&failWriter{n: 2})
	err := w.File("a", 0o644, []byte("data"))
	if err == nil {
		t.Fatal("no error from a failing writer")
	}
	if err2 := w.File("b", 0o644, nil); err2 == nil {
		t.Error("error did not stick")
	}
	if err3 := w.Close(); err3 == nil {
		t.Error("Close succeeded after a write error")
	}
}
