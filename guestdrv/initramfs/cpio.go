// Package initramfs writes Linux initramfs images: "newc" cpio archives,
// optionally gzip-compressed, as the kernel's unpacker reads them.
package initramfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Mode type bits of a newc header (the st_mode values Linux uses).
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

const (
	newcMagic  = "070701"
	headerSize = 110
	trailer    = "TRAILER!!!"
)

// Writer writes a newc cpio archive. Entries keep the order they are added
// in; a missing parent directory is added (mode 0755) before its first
// child, because the kernel's unpacker does not create parents. Every entry
// is owned by root, with mtime 0, so the same inputs give the same bytes.
type Writer struct {
	w      io.Writer
	ino    uint32
	names  map[string]bool // every name written
	dirs   map[string]bool // names that are directories
	closed bool
	err    error // first write error; sticky
}

// NewWriter returns a Writer that writes the archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, ino: 1, names: map[string]bool{}, dirs: map[string]bool{".": true}}
}

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("initramfs: writer closed")

// cleanName validates an archive path: relative, clean, no "..".
func cleanName(name string) (string, error) {
	n := strings.TrimPrefix(name, "/")
	if n == "" || n != path.Clean(n) || n == "." || n == ".." || strings.HasPrefix(n, "../") {
		return "", fmt.Errorf("initramfs: bad name %q", name)
	}
	if strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("initramfs: bad name %q", name)
	}
	return n, nil
}

// Dir adds a directory.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	n, err := w.prepare(name)
	if err != nil {
		return err
	}
	w.dirs[n] = true
	return w.entry(n, modeDir|uint32(perm.Perm()), 2, 0, 0, nil)
}

// File adds a regular file with the given contents.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	n, err := w.prepare(name)
	if err != nil {
		return err
	}
	return w.entry(n, modeRegular|uint32(perm.Perm()), 1, 0, 0, data)
}

// Symlink adds a symbolic link name -> target.
func (w *Writer) Symlink(name, target string) error {
	if target == "" {
		return fmt.Errorf("initramfs: symlink %q: empty target", name)
	}
	n, err := w.prepare(name)
	if err != nil {
		return err
	}
	return w.entry(n, modeSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDev adds a character device node (e.g. dev/console 5:1, which the
// kernel wants before /init runs).
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	n, err := w.prepare(name)
	if err != nil {
		return err
	}
	return w.entry(n, modeCharDev|uint32(perm.Perm()), 1, major, minor, nil)
}

// prepare checks name and writes its missing parent directories.
func (w *Writer) prepare(name string) (string, error) {
	if w.closed {
		return "", ErrClosed
	}
	if w.err != nil {
		return "", w.err
	}
	n, err := cleanName(name)
	if err != nil {
		return "", err
	}
	if w.names[n] {
		return "", fmt.Errorf("initramfs: %q added twice", n)
	}
	if dir := path.Dir(n); !w.dirs[dir] {
		if w.names[dir] {
			return "", fmt.Errorf("initramfs: %q: parent is not a directory", n)
		}
		if err := w.Dir(dir, 0o755); err != nil {
			return "", err
		}
	}
	return n, nil
}

func pad4(n int) int { return (4 - n%4) % 4 }

var zeros [4]byte

func (w *Writer) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	w.names[name] = true
	ino := w.ino
	w.ino++
	if err := w.header(name, ino, mode, nlink, rmajor, rminor, len(data)); err != nil {
		return err
	}
	return w.write(data, zeros[:pad4(len(data))])
}

func (w *Writer) header(name string, ino, mode, nlink, rmajor, rminor uint32, size int) error {
	if uint64(size) > 0xffffffff {
		return fmt.Errorf("initramfs: %q: %d bytes is too large for newc", name, size)
	}
	namesize := len(name) + 1
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		newcMagic, ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, namesize, 0)
	return w.write([]byte(hdr), []byte(name), zeros[:1], zeros[:pad4(headerSize+namesize)])
}

func (w *Writer) write(parts ...[]byte) error {
	for _, p := range parts {
		if w.err != nil {
			return w.err
		}
		if _, err := w.w.Write(p); err != nil {
			w.err = fmt.Errorf("initramfs: write: %w", err)
		}
	}
	return w.err
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	w.closed = true
	return w.header(trailer, 0, 0, 1, 0, 0, 0)
}
