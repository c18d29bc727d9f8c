package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
)

// underPoller: send descriptors that change while the device may be
// looking at them (issue 15; device/myri10ge/README.md, "Descriptors that
// change under the poller"). The outcomes are the same whether BAR0's
// send ring is mmapped and polled (pio=mmap) or every store traps
// (pio=trap): the device reads a descriptor when its flags word at the
// consumer index is non-zero, and nowhere else.
func (a *abuser) underPoller() {
	n := &a.n
	if err := n.bringUp(n.fillRx); err != nil {
		a.p.Failf("tx.torn_chain", "bring-up: %v", err)
		return
	}
	// Addressed to the abuser's own MAC: the switch learns the source
	// first and never sends a frame back out of the port it came in by,
	// so these bursts (a whole ring and more) reach no other guest. As
	// broadcasts they filled the good guests' receive rings and cost
	// them a ping now and then, which is the storm's doing, not the
	// device's.
	silent := arpFrame(n.mac, a.ip, a.ip)
	copy(silent[0:6], n.mac[:])
	good := func() [abi.SendDescSize]byte {
		return desc(n.txFrame(silent), len(silent), 0, 1, 0, abi.FlagNoTSO|abi.FlagFirst|abi.FlagSmall)
	}
	a.p.Check("tx.torn_chain", a.tornChain(silent),
		"a 2-descriptor chain whose head (flags included) lands before its continuation: the head is consumed and "+
			"dropped as malformed and counts in send_done_count; the late continuation (no FIRST) is consumed, not counted; "+
			"the next packet completes with send_done_count exact")

	// A descriptor rewritten behind the consumer index: a slot the device
	// has taken, written again with a good packet.
	_, err := n.sendFrame(silent)
	if err == nil {
		k := (n.txIdx - 1) % n.sendEntries
		n.storeDesc(k, good(), true)
		time.Sleep(quiet)
		if r := n.ring(k, 1); zero(r) {
			err = fmt.Errorf("the device took send slot %d, rewritten behind its consumer index", k)
		} else if err = n.noBlock(quiet); err == nil {
			_, err = n.sendFrame(silent)
		}
	}
	a.p.Check("tx.rewritten_behind", err, fmt.Sprintf("a taken slot written again: left alone (still in BAR0 after %v, no interrupt block); "+
		"the next packet completes with send_done_count exact", quiet))

	// A producer that runs past the consumer: a whole ring and four more
	// as fast as the guest can store, never looking at send_done_count.
	err = n.bringUp(n.fillRx)
	var done uint32
	if err == nil {
		posted := n.sendEntries + 4
		for j := range posted {
			n.storeDesc(j%n.sendEntries, good(), false)
		}
		done, err = n.settle()
		if err == nil && (done < uint32(n.sendEntries) || done > uint32(posted)) {
			err = fmt.Errorf("send_done_count %d after %d packets posted into a ring of %d: want %d..%d",
				done, posted, n.sendEntries, n.sendEntries, posted)
		}
	}
	a.p.Check("tx.past_consumer", err, fmt.Sprintf("%d packets posted into a ring of %d without waiting: the device took each slot as it found it, "+
		"send_done_count %d (%d if it kept up, %d if the producer lapped it: the overwritten packets are lost)",
		n.sendEntries+4, n.sendEntries, done, n.sendEntries+4, n.sendEntries))

	err = n.bringUp(n.fillRx)
	if err == nil {
		err = a.roundTrip()
	}
	a.p.Check("tx.after_poller_abuse", err, "after RESET and bring-up: an ARP request goes out, completes, and the reply comes back")
}

// tornChain posts a chain's head with rdma_count 2 and its flags, waits
// for the device to take it alone, then writes the continuation, then a
// good packet.
func (a *abuser) tornChain(f []byte) error {
	n := &a.n
	addr, half := n.txFrame(f), len(f)/2
	idx, err := n.post(desc(addr, half, 0, 2, 0, abi.FlagNoTSO|abi.FlagFirst|abi.FlagSmall))
	if err != nil {
		return err
	}
	n.txIdx++
	n.sent++
	if err := n.consumed(idx, 1); err != nil {
		return fmt.Errorf("the head alone: %w", err)
	}
	if _, err := n.awaitBlock(blockTimeout, fmt.Sprintf("send_done_count %d for the head alone", n.sent),
		func(b *irqBlock) bool { return b.sendDone() >= uint32(n.sent) }); err != nil {
		return err
	}
	n.storeDesc(idx+1, desc(addr+uint64(half), len(f)-half, 0, 2, 0, abi.FlagNoTSO|abi.FlagSmall), true)
	n.txIdx++
	if err := n.consumed(idx+1, 1); err != nil {
		return fmt.Errorf("the late continuation: %w", err)
	}
	if _, err := n.sendFrame(f); err != nil {
		return fmt.Errorf("the packet after: %w", err)
	}
	return nil
}

// storeDesc writes d into send slot k: as two 8-byte stores if whole (a
// stray or rewriting store), else the driver's way, flags last.
func (n *nic) storeDesc(k int, d [abi.SendDescSize]byte, whole bool) {
	off := n.sendRing + uint64(k)*abi.SendDescSize
	flags := d
	if !whole {
		d[abi.SendOffFlags] = 0
	}
	n.store64(off, d[0:8])
	n.store64(off+8, d[8:16])
	if !whole {
		n.store32(off+12, flags[12:16])
	}
}

// settle takes interrupt blocks until none comes with a higher
// send_done_count for a second, and returns the highest.
func (n *nic) settle() (uint32, error) {
	var last uint32
	seen := false
	for {
		b, err := n.awaitBlock(blockTimeout, "a higher send_done_count", func(b *irqBlock) bool { return b.sendDone() > last })
		if err != nil {
			if !seen {
				return 0, errors.New("no interrupt block after the packets were posted")
			}
			return last, nil
		}
		last, seen = b.sendDone(), true
	}
}
