package myritest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// flushBus is a fake whose command answers wait for a Flush, as posted
// writes wait in a socket until the server reads them.
type flushBus struct {
	*fakeDev
	mu      sync.Mutex
	pending []func()
	flushes int
}

func (b *flushBus) Flush() error {
	b.mu.Lock()
	p := b.pending
	b.pending = nil
	b.flushes++
	b.mu.Unlock()
	for _, f := range p {
		f()
	}
	return nil
}

// deferAnswer makes cmd's response wait; release runs the write.
func deferAnswer(fd *fakeDev, cmd Cmd, release func(func())) {
	fd.answer[cmd] = func(c fakeCmd) (uint32, Status, bool) {
		resp := uint64(fd.be32(OffCmd+cmdOffRespHi))<<32 | uint64(fd.be32(OffCmd+cmdOffRespLo))
		release(func() {
			fd.mem.storeBE32(resp+respOffData, 77)
			fd.mem.storeBE32(resp+respOffResult, uint32(StatusOK))
		})
		return 0, 0, false
	}
}

func TestCmdTimeouts(t *testing.T) {
	if cmdTimeout(false) != 15*time.Millisecond || cmdTimeout(true) != time.Millisecond {
		t.Errorf("budgets %v and %v, want the driver's 15 ms and 1 ms (atomic)", cmdTimeout(false), cmdTimeout(true))
	}
	for _, atomic := range []bool{false, true} {
		d, fd, _ := newTestDriver(t, fakeOpts{}, Options{})
		fd.answer[CmdSetMTU] = func(fakeCmd) (uint32, Status, bool) { return 0, 0, false }
		start := time.Now()
		_, st, err := d.Cmd(testCtx(t), CmdSetMTU, 1, 2, 3, atomic)
		el := time.Since(start)
		wantErr(t, err, ErrTimeout, "SET_MTU")
		// Only the lower bound: a loaded host may stretch the wait.
		if st != StatusNoResponse || el < cmdTimeout(atomic) {
			t.Errorf("atomic %v: status %s after %v, want NO_RESPONSE after at least %v", atomic, st, el, cmdTimeout(atomic))
		}
	}
}

// TestCmdLateResponse: a response that lands after the budget would be
// taken by the driver as the next command's; the next command says so.
func TestCmdLateResponse(t *testing.T) {
	d, fd, _ := newTestDriver(t, fakeOpts{}, Options{})
	var late func()
	deferAnswer(fd, CmdEnableAllMulti, func(write func()) { late = write })
	ctx := testCtx(t)
	if _, _, err := d.Cmd(ctx, CmdEnableAllMulti, 0, 0, 0, true); !errors.Is(err, ErrTimeout) {
		t.Fatalf("unanswered atomic ENABLE_ALLMULTI: %v, want a timeout", err)
	}
	late() // the device answers after the driver gave up
	_, _, err := d.Cmd(ctx, CmdDisableAllMulti, 0, 0, 0, true)
	wantErr(t, err, ErrProtocol, "late response to command ENABLE_ALLMULTI")
	// The one after is fine again.
	if _, st, err := d.Cmd(ctx, CmdDisableAllMulti, 0, 0, 0, true); err != nil || st != StatusOK {
		t.Errorf("next command: %s, %v", st, err)
	}
}

// TestCmdFlush: on a posted-write bus, a response that is there once the
// device handled the stores is accepted (and counted), unless
// StrictTiming.
func TestCmdFlush(t *testing.T) {
	for _, strict := range []bool{false, true} {
		mem := NewMemory(make([]byte, 1<<20), testBase)
		fd := newFakeDev(t, mem, fakeOpts{})
		bus := &flushBus{fakeDev: fd}
		deferAnswer(fd, CmdGetSendOffset, func(write func()) {
			bus.mu.Lock()
			bus.pending = append(bus.pending, write)
			bus.mu.Unlock()
		})
		d := New(bus, mem, nil, Options{StrictTiming: strict})
		data, st, err := d.Cmd(testCtx(t), CmdGetSendOffset, 0, 0, 0, false)
		if strict {
			wantErr(t, err, ErrTimeout, "GET_SEND_OFFSET")
			if bus.flushes != 0 {
				t.Errorf("strict timing flushed %d times", bus.flushes)
			}
			continue
		}
		if err != nil || st != StatusOK || data != 77 || d.Stats().SlowResponses != 1 {
			t.Errorf("flushed answer: data %d status %s err %v slow %d, want 77 OK nil 1", data, st, err, d.Stats().SlowResponses)
		}
	}
}

// TestCmdStatuses: how the driver maps result codes (§4.2).
func TestCmdStatuses(t *testing.T) {
	d, fd, _ := newTestDriver(t, fakeOpts{}, Options{})
	fd.answer[CmdEnableRSSQueues] = func(fakeCmd) (uint32, Status, bool) { return 0, StatusErrorRange, true }
	fd.answer[CmdUnalignedTest] = func(fakeCmd) (uint32, Status, bool) { return 0, StatusErrorUnaligned, true }
	fd.answer[CmdSetMTU] = func(fakeCmd) (uint32, Status, bool) { return 0, StatusErrorMulticast, true }
	ctx := testCtx(t)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ensureCmdBuffer(); err != nil {
		t.Fatal(err)
	}
	errno := func(cmd Cmd, d1 uint32) string {
		_, err := d.send(ctx, cmd, 0, d1, 0, false)
		var ce *CmdError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: %v, want a *CmdError", cmd, err)
		}
		return ce.Errno
	}
	got := []string{
		errno(CmdGetMaxTSO6HdrSize, 0),           // UNKNOWN
		errno(CmdUnalignedTest, 0),               // ERROR_UNALIGNED
		errno(CmdEnableRSSQueues, rssMultipleTx), // ERROR_RANGE with the multi-TX bit
		errno(CmdEnableRSSQueues, 1),             // ERROR_RANGE without
		errno(CmdSetMTU, 0),                      // anything else
	}
	if diff := cmp.Diff([]string{"ENOSYS", "E2BIG", "ERANGE", "ENXIO", "ENXIO"}, got); diff != "" {
		t.Errorf("errnos (-want +got):\n%s", diff)
	}
	var logged []string
	for _, e := range d.log {
		logged = append(logged, e.String())
	}
	want := []string{"err: command 36 failed, result = 2", "err: command 16 failed, result = 9"}
	if diff := cmp.Diff(want, logged); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
}
