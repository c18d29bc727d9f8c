package myri10ge

import "github.com/myriemu/myriemu/device/myri10ge/abi"

// Guest mistakes the poller can see (pio=mmap; README, "Descriptors that
// change under the poller"). Send-side mistakes need nothing here: the
// poller takes a packet by the same code as a trapped doorbell
// (transmitLocked), so a torn or half-written chain is consumed and
// dropped as malformed, and a descriptor without FIRST is skipped, in
// either mode.

// rxOutOfOrderLocked looks, when the receive group the device expects
// next (want, a group index) is not posted, at the group after it. The
// driver posts groups in order, each group's first addr_low last (§5.2),
// so a valid group want+1 with group want still invalid is a group posted
// out of order: as a trapped store of it would be, it is not taken (the
// device marks it unposted again, so it is reported once) and counts as a
// guest mistake. Group want is loaded again after group want+1: on x86's
// store order a driver that posted want before want+1 has made want
// visible by then, so an in-order posting racing the scan is not blamed.
// A ring with no room for a second group is left alone: its next group
// holds posted buffers.
func (n *NIC) rxOutOfOrderLocked(r *rxRing, base uint64, want uint64) {
	if r.avail()+2*abi.RecvGroup > rxRingEntries {
		return
	}
	next := (want + 1) % (rxRingEntries / abi.RecvGroup)
	nextLow := base + next*abi.RecvGroup*abi.RecvDescSize + abi.RecvOffAddrLow
	if n.load32BE(nextLow) == abi.RecvInvalidLow {
		return
	}
	if n.load32BE(base+want*abi.RecvGroup*abi.RecvDescSize+abi.RecvOffAddrLow) != abi.RecvInvalidLow {
		return // posted in order after all; the next scan takes both
	}
	n.storeInvalidLow(base + next*abi.RecvGroup*abi.RecvDescSize)
	n.guestErrorLocked("receive buffers posted out of order", "group", next)
}
