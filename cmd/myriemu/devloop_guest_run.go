package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/myriemu/myriemu/guestdrv/image"
	"github.com/myriemu/myriemu/vm"
	"golang.org/x/sys/unix"
)

// guestRun is one guest's boot and what came of it.
type guestRun struct {
	plan   guestPlan
	dir    string // console.log, qemu-stderr.log, qemu-cmdline.txt
	initrd string

	con      *console
	stderr   *serverLog // QEMU's stderr
	bootTime time.Duration
	elapsed  time.Duration
	timedOut string
	err      error // QEMU did not start, or exited with an error
}

// escapeKey (Ctrl-]) ends a --shell session from the keyboard, as in
// telnet and virsh console; every other key goes to the guest.
const escapeKey = 0x1d

// runGuest boots one guest and waits for it to power off, time out, or
// for ctx to end; QEMU is gone when it returns.
func (d *devloop) runGuest(ctx context.Context, r *guestRun, qemu vm.Binary, rootfs *image.Rootfs) {
	r.stderr = &serverLog{}
	r.con = &console{name: r.plan.Name, live: d.live, liveMu: &d.liveMu}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		r.err = err
		return
	}
	cfg := vm.Config{
		Binary: qemu,
		Kernel: d.kernel,
		// The kernel's check that the timer interrupt arrives through
		// the IO-APIC is timing-dependent; under TCG on a loaded host it
		// fails (falling back to the 8259A, or panicking: "IO-APIC +
		// timer doesn't work!"). KVM guests skip it the same way.
		Append:    "no_timer_check",
		Initrd:    r.initrd,
		MemoryMiB: d.cfg.Memory,
		Devices:   r.plan.devices(),
		QMPSocket: filepath.Join(filepath.Dir(r.initrd), "s", r.plan.Name+".qmp"),
	}
	if d.cfg.Share != "" {
		cfg.ExtraArgs = shareArgs("share", d.cfg.Share, shareTag)
	}
	if d.barrier != "" {
		cfg.ExtraArgs = append(cfg.ExtraArgs, shareArgs("barrier", d.barrier, barrierTag)...)
		// Whatever became of this guest, the others need not wait for it.
		defer touchBarrier(d.barrier, r.plan.Index)
	}
	m, err := vm.New(cfg, nil)
	if err != nil {
		r.err = err
		return
	}
	_ = os.WriteFile(filepath.Join(r.dir, "qemu-cmdline.txt"), []byte(m.CommandLine()+"\n"), 0o644)
	consoleFile, err := os.Create(filepath.Join(r.dir, "console.log"))
	if err != nil {
		r.err = err
		return
	}
	defer consoleFile.Close()
	stderrFile, err := os.Create(filepath.Join(r.dir, "qemu-stderr.log"))
	if err != nil {
		r.err = err
		return
	}
	defer stderrFile.Close()
	booted := make(chan struct{})
	r.con.file = consoleFile
	r.con.onBoot = func() { close(booted) }
	r.stderr.file = stderrFile
	m.Console, m.Stderr = r.con, r.stderr
	shell := d.cfg.Shell && r.plan.Index == 1
	if shell {
		r.con.raw = true
		in, stop, err := d.keyboard()
		if err != nil {
			r.err = err
			return
		}
		defer stop()
		m.Stdin = in
	}

	start := time.Now()
	defer func() {
		r.con.flush()
		r.elapsed = time.Since(start)
	}()
	if err := m.Start(ctx); err != nil {
		r.err = fmt.Errorf("QEMU did not come up: %w", err)
		return
	}
	bootTimer := time.NewTimer(d.cfg.Boot)
	defer bootTimer.Stop()
	var guestTimer <-chan time.Time
	bootSeen := (<-chan struct{})(booted)
wait:
	for {
		select {
		case <-m.Exited():
			break wait
		case <-bootSeen:
			bootSeen = nil
			r.bootTime = time.Since(start)
			bootTimer.Stop()
			t := time.NewTimer(d.cfg.Timeout)
			defer t.Stop()
			guestTimer = t.C
			if !shell {
				d.say("%s reached /init after %.1f s", r.plan.Name, r.bootTime.Seconds())
			}
		case <-bootTimer.C:
			r.timedOut = fmt.Sprintf("did not reach /init within --boot-timeout %v", d.cfg.Boot)
			break wait
		case <-guestTimer:
			r.timedOut = fmt.Sprintf("did not power off within --timeout %v of /init", d.cfg.Timeout)
			break wait
		case <-ctx.Done():
			_ = m.Kill()
			break wait
		}
	}
	if r.timedOut != "" {
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = m.Shutdown(qctx) // QMP quit; killed if that fails
		cancel()
	}
	if err := m.Wait(context.Background()); err != nil && r.timedOut == "" && ctx.Err() == nil {
		r.err = err
	}
}

// keyboard forwards the terminal (standard input) to the --shell guest's
// serial port: raw mode on a terminal, so that Ctrl-C and Ctrl-D reach the
// guest's shell, and Ctrl-] (escapeKey) stops the run. stop restores the
// terminal and joins the forwarding goroutine.
func (d *devloop) keyboard() (io.Reader, func(), error) {
	fd := int(d.stdin.Fd())
	restore := func() {}
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		saved := *t
		raw := *t
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
			return nil, nil, fmt.Errorf("--shell: terminal raw mode: %w", err)
		}
		restore = func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, &saved) }
		d.say("--shell: the first guest's console is yours; exit or Ctrl-D ends it, Ctrl-] stops everything\r")
	}
	// A non-blocking descriptor makes the file pollable, so that a read
	// deadline can end the forwarding goroutine.
	if err := syscall.SetNonblock(fd, true); err != nil {
		restore()
		return nil, nil, fmt.Errorf("--shell: %w", err)
	}
	in := os.NewFile(uintptr(fd), "stdin")
	// QEMU gets the pipe's read end itself (an *os.File: no copying
	// goroutine inside exec that its Wait would wait for).
	pr, pw, err := os.Pipe()
	if err != nil {
		_ = syscall.SetNonblock(fd, false)
		restore()
		return nil, nil, fmt.Errorf("--shell: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { // runKeyboard
		buf := make([]byte, 256)
		for {
			n, err := in.Read(buf)
			if i := bytes.IndexByte(buf[:n], escapeKey); i >= 0 {
				_, _ = pw.Write(buf[:i])
				d.interrupt()
				return
			}
			if n > 0 {
				if _, werr := pw.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return // EOF, the deadline, or a closed terminal
			}
		}
	})
	stop := func() {
		_ = in.SetReadDeadline(time.Now())
		_ = pw.Close() // unblocks a write QEMU no longer reads
		wg.Wait()
		_ = pr.Close()
		_ = syscall.SetNonblock(fd, false)
		restore()
	}
	return pr, stop, nil
}

// interrupt stops the run as a signal would.
func (d *devloop) interrupt() {
	if d.cancel != nil {
		d.cancel()
	}
}
