package link

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/internal/unixsock"
	"golang.org/x/sys/unix"
)

func TestSet(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	s := NewSet(sw, quietLog())
	defer s.Close()
	srv, err := s.Add("stream=127.0.0.1:0,server")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add("stream=" + srv.Addr() + ",client,name=up"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add("dgram=127.0.0.1:0,127.0.0.1:9,name=up"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second port named up: %v", err)
	}
	if _, err := s.Add("stream=nohost,server"); err == nil {
		t.Error("a bad spec was added")
	}
	eventually(t, "the pair connects", func() bool {
		q := s.Query()
		return len(q) == 2 && q[0].Stats.Carrier && q[1].Stats.Carrier
	})
	q := s.Query()
	if q[0].Name != "stream0" || q[1].Name != "up" || !strings.HasSuffix(q[1].Spec, ",client,name=up") {
		t.Errorf("query: %+v", q)
	}
	if err := s.Remove("up"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("up"); err == nil {
		t.Error("removed twice")
	}
	eventually(t, "the server loses its peer", func() bool { return !s.Query()[0].Stats.Carrier })
	if n := len(sw.Ports()); n != 1 {
		t.Errorf("%d ports on the switch after removing one of two", n)
	}
	s.Close()
	if _, err := s.Add("stream=127.0.0.1:0,server"); err == nil {
		t.Error("Add after Close succeeded")
	}
}

// TestSocketFilesMode: the UNIX socket files links create get the set's
// mode, whatever the umask.
func TestSocketFilesMode(t *testing.T) {
	leaktest.Check(t)
	old := unix.Umask(0)
	defer unix.Umask(old)
	dir := t.TempDir()
	s := NewSet(fabric.NewSwitch(quietLog()), quietLog())
	s.Perm = unixsock.Perm{Mode: 0o640}
	defer s.Close()
	for _, spec := range []string{
		"stream=unix:" + dir + "/s,server",
		"dgram=unix:" + dir + "/d,unix:" + dir + "/peer",
		"vhost-user=" + dir + "/v",
	} {
		if _, err := s.Add(spec); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"s", "d", "v"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: mode %v, want 0640", f, fi.Mode().Perm())
		}
	}
	s.Close()
	for _, f := range []string{"s", "d", "v"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s left behind after Close", f)
		}
	}
}
