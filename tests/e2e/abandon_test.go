//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/tests/harness"
)

// abandonEnv makes the test binary play a test process that dies abruptly
// (as on go test's timeout panic, or a SIGKILL) while a server and a guest
// are running, without any cleanup.
const abandonEnv = "MYRIEMU_E2E_ABANDON"

// abandon starts a server and a hanging guest, prints "ABANDON tag work"
// (after "ABANDON-WORK dir", so the parent can always clean up)
// once both run, and exits without stopping anything.
func abandon() int {
	e, err := harness.NewEnv()
	if err != nil {
		fmt.Println("ABANDON-ERROR", err)
		return 1
	}
	fmt.Println("ABANDON-WORK", e.Work) // the parent removes it whatever happens
	ctx := context.Background()
	sock := filepath.Join(e.Work, "td0.sock")
	// Quiet processes: nothing they write after we die may kill them by
	// SIGPIPE, so only Pdeathsig can.
	if _, err := e.StartServer(ctx, "myriemu", []string{"serve", "--device", "testdev,socket=" + sock + ",name=td0",
		"--log-level", "error"}, 30*time.Second, nil); err != nil {
		fmt.Println("ABANDON-ERROR", err)
		return 1
	}
	// The guest needs no device: what matters is that both processes run.
	dir := filepath.Join(e.Work, "abandoned")
	ended := make(chan *harness.Run, 1)
	go func() {
		ended <- e.RunGuest(ctx, harness.Guest{
			Name:     "abandoned",
			Scenario: "echo ABANDON-SLEEPING; sleep 100000",
			Timeout:  time.Hour,
			Dir:      dir,
		})
	}()
	// Wait until the guest sleeps (QEMU prints nothing more), then die.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r := <-ended:
			fmt.Println("ABANDON-ERROR the guest ended before its scenario:", strings.ReplaceAll(r.Report(), "\n", " | "))
			return 1
		case <-tick.C:
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "console.log")); strings.Contains(string(b), "ABANDON-SLEEPING") {
			time.Sleep(500 * time.Millisecond) // let the console go quiet
			fmt.Println("ABANDON", e.Tag, e.Work)
			os.Exit(3) // no deferred cleanup, no t.Cleanup: like a crash
		}
	}
}

// A test process that dies mid-run (go test's timeout panic, SIGKILL) must
// not leave QEMU or myriemu behind: both die with it (Pdeathsig).
func TestNothingOutlivesADeadTestProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), abandonEnv+"=1")
	cmd.Dir, _ = os.Getwd()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var tag, work string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "ABANDON-WORK" {
			work = f[1]
			t.Cleanup(func() { os.RemoveAll(work) })
		} else if len(f) == 3 && f[0] == "ABANDON" {
			tag = f[1]
		} else if len(f) > 0 && f[0] == "ABANDON-ERROR" {
			t.Errorf("child: %s", sc.Text())
		}
	}
	err = cmd.Wait()
	if tag == "" {
		t.Fatalf("child never reported its server and guest running (exit: %v)", err)
	}
	// Pdeathsig kills them as the child dies; allow half a second for the
	// kernel to finish them. Without it both would live on: they are quiet,
	// so no write into a dead pipe kills them either.
	var left []string
	for i := 0; i < 10; i++ {
		if left, err = harness.Leftovers(tag, work); err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("left behind by a test process that died:\n%s", strings.Join(left, "\n"))
}
