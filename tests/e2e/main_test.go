//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/myriemu/myriemu/tests/harness"
)

// env is shared by every test of the package (rootfs, QEMU, built binaries).
var env *harness.Env

func TestMain(m *testing.M) {
	if os.Getenv(abandonEnv) != "" {
		os.Exit(abandon())
	}
	var err error
	env, err = harness.NewEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "e2e: rootfs %s (kernel %s); %s, the %s\n",
		env.Rootfs.Dir, env.Rootfs.KernelABI, env.QEMUVersion, env.QEMU.Desc)
	code := m.Run()
	// Whatever the tests did, nothing they started may outlive them.
	left, err := env.Leftovers()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: leftover check: %v\n", err)
		code = 1
	}
	for _, l := range left {
		fmt.Fprintf(os.Stderr, "FAIL: %s\n", l)
		code = 1
	}
	if err := env.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cleanup: %v\n", err)
	}
	os.Exit(code)
}
