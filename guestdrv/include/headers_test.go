package include

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestModuleHeaderCopies fails when the myrimx module's copy of a header
// drifts from the one here; fix with cp guestdrv/include/myrimx_*.h
// guestdrv/modules/myrimx/.
func TestModuleHeaderCopies(t *testing.T) {
	for _, name := range []string{"myrimx_abi.h", "myrimx_ioctl.h"} {
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("..", "modules", "myrimx", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("guestdrv/modules/myrimx/%s differs from guestdrv/include/%s: copy it again", name, name)
		}
	}
}
