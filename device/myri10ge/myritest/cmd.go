package myritest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Command timeouts of myri10ge_send_cmd (§4.1).
const (
	cmdBudget       = 15 * time.Millisecond // 15 x msleep(1)
	cmdBudgetAtomic = time.Millisecond      // 100 x udelay(10)
)

// Cmd sends one raw mailbox command, as myri10ge_send_cmd does, and
// returns the response's data and status. Only a missing response (status
// NO_RESPONSE after the driver's budget: 15 ms, or 1 ms for atomic
// commands) or a bus failure is an error (wrapping ErrTimeout); other
// statuses are returned as they are. Tests use it to issue commands the
// driver's sequences do not, or in an order they do not.
func (d *Driver) Cmd(ctx context.Context, cmd Cmd, d0, d1, d2 uint32, atomic bool) (uint32, Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ensureCmdBuffer(); err != nil {
		return 0, StatusNoResponse, err
	}
	return d.mailbox(ctx, cmd, cmdWords{d0, d1, d2}, atomic)
}

// ensureCmdBuffer allocates the coherent response buffer (probe does it
// first thing; Cmd before Probe needs it too).
func (d *Driver) ensureCmdBuffer() error {
	if d.cmdBus != 0 {
		return nil
	}
	addr, err := d.mem.Alloc(respSize, 8)
	if err != nil {
		return err
	}
	d.cmdBus = addr
	return nil
}

// mailbox writes the command block and polls for the response.
func (d *Driver) mailbox(ctx context.Context, cmd Cmd, c cmdWords, atomic bool) (uint32, Status, error) {
	// A response that lands after the driver gave up is taken by the
	// driver as the answer to the next command: the corruption §4.1 warns
	// about. Catch it before re-arming the buffer.
	if d.late {
		d.late = false
		if r := Status(d.mem.loadBE32(d.cmdBus + respOffResult)); r != StatusNoResponse {
			return 0, StatusNoResponse, d.violation("late response to command %s (status %s) arrived after the driver gave up; "+
				"the driver would take it as the answer to %s", d.lateCmd, r, cmd)
		}
	}
	d.stats.Commands++
	var blk [cmdBlockSize]byte
	be := binary.BigEndian
	be.PutUint32(blk[0:], uint32(cmd))
	be.PutUint32(blk[4:], c.d0)
	be.PutUint32(blk[8:], c.d1)
	be.PutUint32(blk[12:], c.d2)
	be.PutUint32(blk[cmdOffRespHi:], uint32(d.cmdBus>>32))
	be.PutUint32(blk[cmdOffRespLo:], uint32(d.cmdBus))
	for o := 0x18; o < cmdBlockSize; o += 4 {
		be.PutUint32(blk[o:], d.uninit()) // the stack buffer's pad
	}
	d.mem.storeBE32(d.cmdBus+respOffResult, uint32(StatusNoResponse))
	if err := d.pioCopy(OffCmd, blk[:]); err != nil {
		return 0, StatusNoResponse, err
	}
	budget := cmdTimeout(atomic)
	answered := func() bool { return Status(d.mem.loadBE32(d.cmdBus+respOffResult)) != StatusNoResponse }
	ok, err := d.poll(ctx, budget, answered)
	if err != nil {
		return 0, StatusNoResponse, err
	}
	if !ok {
		d.late, d.lateCmd = true, cmd
		d.logf(Err, "command %d timed out, result = %d", uint32(cmd), -1)
		return 0, StatusNoResponse, fmt.Errorf("%w: command %s (data %#x %#x %#x): no response within %v", ErrTimeout, cmd, c.d0, c.d1, c.d2, budget)
	}
	result := Status(d.mem.loadBE32(d.cmdBus + respOffResult))
	value := d.mem.loadBE32(d.cmdBus + respOffData)
	return value, result, nil
}

// cmdTimeout is the driver's budget for a command's response.
func cmdTimeout(atomic bool) time.Duration {
	if atomic {
		return cmdBudgetAtomic
	}
	return cmdBudget
}

// poll waits up to budget for cond, as the driver's sleep loops do. When
// the budget is spent on a posted-write bus it flushes once and looks
// again, unless Options.StrictTiming (see there).
func (d *Driver) poll(ctx context.Context, budget time.Duration, cond func() bool) (bool, error) {
	if cond() {
		return true, nil
	}
	step := budget / 50
	deadline := time.Now().Add(budget)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		time.Sleep(step)
		if cond() {
			return true, nil
		}
	}
	if f, ok := d.bus.(Flusher); ok && !d.opts.StrictTiming {
		if err := f.Flush(); err != nil {
			return false, fmt.Errorf("myritest: flush: %w", err)
		}
		if cond() {
			d.stats.SlowResponses++
			return true, nil
		}
	}
	return false, nil
}

// CmdError is a command answered with a status other than OK. Errno is
// what myri10ge_send_cmd returns for it.
type CmdError struct {
	Cmd    Cmd
	Status Status
	Errno  string // ENOSYS, E2BIG, ERANGE or ENXIO
}

func (e *CmdError) Error() string {
	return fmt.Sprintf("myritest: command %s failed: status %s (-%s)", e.Cmd, e.Status, e.Errno)
}

// IsUnknown reports whether err is a command answered UNKNOWN (-ENOSYS).
func IsUnknown(err error) bool {
	var ce *CmdError
	return errors.As(err, &ce) && ce.Status == StatusUnknown
}

// sendCmd is myri10ge_send_cmd: the status mapped to the driver's errno
// and log lines. On OK, c.d0 takes the response data.
func (d *Driver) sendCmd(ctx context.Context, cmd Cmd, c *cmdWords, atomic bool) error {
	value, result, err := d.mailbox(ctx, cmd, *c, atomic)
	if err != nil {
		return err
	}
	switch {
	case result == StatusOK:
		c.d0 = value
		return nil
	case result == StatusUnknown:
		return &CmdError{cmd, result, "ENOSYS"}
	case result == StatusErrorUnaligned:
		return &CmdError{cmd, result, "E2BIG"}
	case result == StatusErrorRange && cmd == CmdEnableRSSQueues && c.d1&rssMultipleTx != 0:
		return &CmdError{cmd, result, "ERANGE"}
	}
	d.logf(Err, "command %d failed, result = %d", uint32(cmd), uint32(result))
	return &CmdError{cmd, result, "ENXIO"}
}

// send is sendCmd with a fresh command struct carrying d0..d2.
func (d *Driver) send(ctx context.Context, cmd Cmd, d0, d1, d2 uint32, atomic bool) (uint32, error) {
	c := cmdWords{d0, d1, d2}
	err := d.sendCmd(ctx, cmd, &c, atomic)
	return c.d0, err
}
