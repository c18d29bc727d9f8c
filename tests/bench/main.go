// Command bench measures what guests see of the emulated NIC, outside
// `make test` (docs/speed.md has the figures and how to read them):
//
//	go run ./tests/bench compare   # Myri-10G pio=mmap, pio=trap and QEMU's e1000e, alternating
//	go run ./tests/bench idle      # the server's CPU with a NIC up and idle, and with no client
//
// Both boot TCG guests with the e2e harness (root, the provisioned rootfs)
// and keep consoles and server logs in tests/artifacts/bench.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/myriemu/myriemu/tests/harness"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "compare":
		err = withEnv(ctx, "compare", func(env *harness.Env, dir string) error { return compare(ctx, env, dir, args) })
	case "idle":
		err = withEnv(ctx, "idle", func(env *harness.Env, dir string) error { return idle(ctx, env, dir, args) })
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: bench compare [flags] | bench idle [flags]   (-h for the flags)")
	os.Exit(2)
}

// withEnv runs fn with the harness and a fresh artifacts directory.
func withEnv(ctx context.Context, name string, fn func(env *harness.Env, dir string) error) error {
	env, err := harness.NewEnv()
	if err != nil {
		return err
	}
	defer env.Close()
	dir := filepath.Join(env.Repo, "tests", "artifacts", "bench", name)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Printf("bench %s: consoles and server logs in %s\n", name, dir)
	return errors.Join(fn(env, dir), ctx.Err())
}

// parse parses a subcommand's flags, exiting on -h or an error.
func parse(fs *flag.FlagSet, args []string) {
	fs.Init(fs.Name(), flag.ExitOnError)
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		os.Exit(2)
	}
}
