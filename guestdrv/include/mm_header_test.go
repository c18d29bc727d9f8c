package include

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The myrimx_mm helper module builds from its own directory only (kbuild
// sees nothing else), so it carries a copy of its ioctl header; user
// programs include the one in guestdrv/include. They must not drift.
func TestMyrimxMMHeaderCopy(t *testing.T) {
	canon, err := os.ReadFile("myrimx_mm_ioctl.h")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := os.ReadFile(filepath.Join("..", "modules", "myrimx_mm", "myrimx_mm_ioctl.h"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(canon, cp) {
		t.Error("guestdrv/modules/myrimx_mm/myrimx_mm_ioctl.h differs from guestdrv/include/myrimx_mm_ioctl.h: copy the include one over it")
	}
}
