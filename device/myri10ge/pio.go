package myri10ge

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/wcbar"
	"github.com/sirupsen/logrus"
)

// PIO windows (issue 15). In PIOTrap mode every BAR0 store is a vfio-user
// message (WriteBAR). In PIOMmap mode BAR0 lives in a wcbar.Window and the
// slices' send rings and small and big receive rings are sparse-mmap areas:
// the guest's descriptor and buffer stores reach them with no message, as
// PIO stores reach a real board's write-combined SRAM. Everything with a
// side effect per store (mailbox, handoff, claims, SEND_GO, coalescing,
// deassert) stays trapped. The device learns of new send descriptors and
// receive postings by polling the rings' state (pollLoop), and rescans
// them on every trapped access: a claim or a command says the driver is
// active.
//
// Polling looks at state, not changes: the send ring's descriptor at the
// consumer index has non-zero flags, or the receive group the device
// expects next has a valid first addr_low. For the latter the device marks
// every group it has used up with the invalid addr_low the driver itself
// writes while it copies a group (§5.2), so a group reposted with the very
// same buffer addresses is still seen.

// PIOMode is how BAR0's rings are reached.
type PIOMode uint8

const (
	PIOTrap PIOMode = iota // every store a message: the path of old
	PIOMmap                // rings mmapped into the guest, polled by the device
)

func (m PIOMode) String() string {
	switch m {
	case PIOTrap:
		return "trap"
	case PIOMmap:
		return "mmap"
	}
	return fmt.Sprintf("PIOMode(%d)", uint8(m))
}

// pioPacing paces the ring poller (wcbar.Poller): flat out for 50 µs after
// the last work found (a driver posts in bursts); then sleeps of 150 µs
// (about 200 µs with the thread's timer slack) for 100 ms, so that a send
// the driver posts outside NAPI (a ping, a delayed ACK, a write from
// process context once the window opens) waits about as long as a trapped
// store's round trip; then sleeps doubling up to 1 ms; after a second
// without work, 12 ms at a time, so that an idle NIC costs the host little
// (with 8 ms it cost 1.4-2.1% of a core on the project's machine, at the
// issue's 2% line; with 12 ms 1.3-1.7%, docs/speed.md).
// Every wakeup costs this process 20-40 µs of CPU on the project's VM
// (BenchmarkPollerSleep), taken from the vCPUs of a two-core host: the
// fine tier costs up to 15% of a core while it lasts. Finer sleeps were
// tried: 50 and 100 µs won little on pings and lost 10-15% of a TCP
// stream's rate to the vCPUs (docs/speed.md). Whatever says the driver is
// active wakes the poller at once: a trapped access (a claim, a command)
// or a frame delivered to the NIC (the driver will repost the buffer and,
// likely, answer). What stays slow is a first send after a second of
// silence: up to 12 ms, as a ping -i 1 shows.
var pioPacing = wcbar.Pacing{
	Spin: 50 * time.Microsecond, MinSleep: 150 * time.Microsecond, FineFor: 100 * time.Millisecond,
	MaxSleep: time.Millisecond, IdleAfter: time.Second, IdleSleep: 12 * time.Millisecond,
}

// pioState is the NIC's PIO window and poller; zero in trap mode.
type pioState struct {
	win    *wcbar.Window
	poller *wcbar.Poller // non-nil while the poller runs; guarded by NIC.mu
	// lateRefills counts frames that found their buffers only by a look at
	// the ring when they arrived (rxShortLocked): drops the poller's
	// sleep would have caused. Guarded by NIC.mu.
	lateRefills uint64
}

// newPIOWindow makes BAR0's memory for PIOMmap: the rings of the slices
// the NIC has are mmappable, all else trapped.
func newPIOWindow(cfg Config) (*wcbar.Window, error) {
	w, err := wcbar.New(cfg.Name+"-bar0", abi.BAR0Size, cfg.Log)
	if err != nil {
		return nil, fmt.Errorf("myri10ge: %s: BAR0 window: %w", cfg.Name, err)
	}
	var areas []wcbar.Area
	for s := range cfg.Slices {
		areas = append(areas, wcbar.Area{Offset: sendRingOff(s), Size: sendRingBytes})
	}
	for s := range cfg.Slices {
		areas = append(areas, wcbar.Area{Offset: smallRingOff(s), Size: rxRingBytes})
	}
	for s := range cfg.Slices {
		areas = append(areas, wcbar.Area{Offset: bigRingOff(s), Size: rxRingBytes})
	}
	// Trap the complement (areas are sorted and page-aligned).
	pos := uint64(0)
	for _, a := range areas {
		if a.Offset > pos {
			w.Trap(pos, a.Offset-pos)
		}
		pos = a.Offset + a.Size
	}
	w.Trap(pos, abi.BAR0Size-pos)
	return w, nil
}

// inRxRing reports whether a store of size bytes at off lies in a receive
// ring row of the BAR0 map.
func inRxRing(off uint64, size int) bool {
	end := off + uint64(size)
	return off >= smallRingBase && end <= bigRingBase+MaxSlices*rxRingStride
}

// pioTrappedLocked handles a trapped BAR0 store in PIOMmap mode: receive
// ring stores (QEMU has the mmap off, as under INTx) are only memory, the
// scan finds what they posted; every other store has its usual effect.
// Then the rings are rescanned and the poller woken.
func (n *NIC) pioTrappedLocked(off uint64, size int) {
	if !inRxRing(off, size) {
		n.bar0WrittenLocked(off, size)
	}
	n.scanLocked()
	n.kickPollerLocked()
}

// kickPollerLocked wakes the poller of a PIOMmap NIC from its sleep: the
// driver is active.
func (n *NIC) kickPollerLocked() {
	if n.pio.poller != nil {
		n.pio.poller.Kick()
	}
}

// load32BE reads the big-endian word at BAR0 offset off (4-aligned) with
// one atomic load: the guest may be storing it through its mapping.
func (n *NIC) load32BE(off uint64) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], n.pio.win.Load32(off))
	return binary.BigEndian.Uint32(b[:])
}

// scanLocked takes what the driver posted through the mapping: packets at
// each send ring's consumer index and receive groups in posting order. It
// reports whether it found any.
func (n *NIC) scanLocked() bool {
	if n.pio.win == nil || !n.attached {
		return false
	}
	work := false
	for _, s := range n.slices {
		if s.halted {
			continue
		}
		flags := sendRingOff(s.idx) + uint64(s.txIdx%sendRingEntries)*abi.SendDescSize + abi.SendOffPad
		if n.load32BE(flags)&0xFF != 0 {
			n.transmitLocked(s)
			work = true
		}
		small, big := n.takePostedLocked(s, ringSmall), n.takePostedLocked(s, ringBig)
		if small || big {
			n.drainPostedLocked(s)
			work = true
		}
	}
	return work
}

// takePostedLocked takes the receive groups the driver posted through the
// mapping to one of slice s's rings, in posting order, and reports whether
// there were any.
func (n *NIC) takePostedLocked(s *slice, ring int) bool {
	base := smallRingOff(s.idx)
	if ring == ringBig {
		base = bigRingOff(s.idx)
	}
	r := &s.rx[ring]
	work := false
	for r.avail()+abi.RecvGroup <= rxRingEntries {
		g := uint64(r.posted/abi.RecvGroup) % (rxRingEntries / abi.RecvGroup)
		if n.load32BE(base+g*abi.RecvGroup*abi.RecvDescSize+abi.RecvOffAddrLow) == abi.RecvInvalidLow {
			n.rxOutOfOrderLocked(r, base, g)
			break
		}
		r.posted += abi.RecvGroup
		work = true
	}
	return work
}

// rxShortLocked is called when a frame finds fewer than need buffers in a
// ring of slice s: in PIOMmap the driver may have posted more since the
// poller's last pass (it refills as it takes frames, and the poller may be
// asleep), so look before dropping, as firmware reading its SRAM would
// have seen them.
func (n *NIC) rxShortLocked(s *slice, ring int, need uint32) {
	if n.pio.win == nil || s.halted {
		return
	}
	if n.takePostedLocked(s, ring) && s.rx[ring].avail() >= need {
		n.pio.lateRefills++
	}
}

// markUsedLocked marks the receive groups wholly used by consuming
// entries [from, to) of a ring at base (see the comment at the top).
func (n *NIC) markUsedLocked(base uint64, from, to uint32) {
	if n.pio.win == nil {
		return
	}
	for e := from; e != to; e++ {
		if (e+1)%abi.RecvGroup == 0 {
			g := uint64(e/abi.RecvGroup) % (rxRingEntries / abi.RecvGroup)
			n.storeInvalidLow(base + g*abi.RecvGroup*abi.RecvDescSize)
		}
	}
}

// storeInvalidLow writes the invalid addr_low into the receive entry at
// off, as one atomic store.
func (n *NIC) storeInvalidLow(off uint64) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], abi.RecvInvalidLow)
	n.pio.win.Store32(off+abi.RecvOffAddrLow, binary.NativeEndian.Uint32(b[:]))
}

// markAllUnpostedLocked marks every receive group unposted (after reset).
func (n *NIC) markAllUnpostedLocked() {
	if n.pio.win == nil {
		return
	}
	for _, s := range n.slices {
		for _, base := range [2]uint64{smallRingOff(s.idx), bigRingOff(s.idx)} {
			for g := uint64(0); g < rxRingEntries/abi.RecvGroup; g++ {
				n.storeInvalidLow(base + g*abi.RecvGroup*abi.RecvDescSize)
			}
		}
	}
}

// startPollerLocked starts the poller of an attached NIC in PIOMmap mode.
// Without one (no eventfd to be had) the rings are still scanned on every
// trapped access: slow, but the driver's claims keep traffic moving.
func (n *NIC) startPollerLocked() {
	if n.pio.win == nil || n.pio.poller != nil {
		return
	}
	p, err := wcbar.StartPoller(pioPacing, func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.scanLocked()
	})
	if err != nil {
		n.log.WithError(err).Error("no ring poller: mapped descriptor stores are seen only at the next trapped access")
		return
	}
	n.pio.poller = p
}

// stopPoller stops the poller and joins it. Call without n.mu held (a pass
// takes it).
func (n *NIC) stopPoller() {
	n.mu.Lock()
	p := n.pio.poller
	n.pio.poller = nil
	late := n.pio.lateRefills
	n.mu.Unlock()
	if p != nil {
		p.Stop()
		st := p.Stats()
		n.log.WithFields(logrus.Fields{
			"late_refills": late,
			"passes":       st.Passes, "found": st.Found, "kicked": st.Kicked,
			"fine_sleeps": st.FineSleeps, "ramp_sleeps": st.RampSleeps, "idle_sleeps": st.IdleSleeps,
			"found_after_fine": st.FoundFine, "found_after_ramp": st.FoundRamp, "found_after_idle": st.FoundIdle,
		}).Info("ring poller stopped")
	}
}
