package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// A split virtqueue (virtio 1.x, 2.7), little-endian as VIRTIO_F_VERSION_1
// requires. The guest owns the descriptor table and the available ring,
// the device the used ring. x86 keeps stores in order (TSO), so writing a
// used element before the used index publishes it without a fence.

const (
	descSize      = 16
	descFNext     = 1
	descFWrite    = 2
	descFIndirect = 4

	availFNoInterrupt = 1

	maxQueueSize = 32768
)

// netHdrSize is the virtio-net header with VIRTIO_F_VERSION_1 (5.1.6):
// flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers.
const netHdrSize = 12

var errRing = errors.New("vhostuser: guest ring")

// vring is one virtqueue's state as the front end set it.
type vring struct {
	num               uint32
	addr              VringAddr
	lastAvail         uint16 // next available entry to take
	usedIdx           uint16 // next used entry to fill
	kick, call        *os.File
	enabled           bool
	desc, avail, used []byte // mapped once addresses and memory are known
}

// ready reports whether the ring can be used: mapped, with a kick fd (the
// protocol's "started") and enabled.
func (v *vring) ready() bool {
	return v.desc != nil && v.kick != nil && v.enabled
}

// mapRing maps the ring's three parts through mem.
func (v *vring) mapRing(mem *memory) error {
	v.desc, v.avail, v.used = nil, nil, nil
	if mem == nil || v.num == 0 || v.addr.Desc == 0 {
		return nil // not yet: mapped again when the rest arrives
	}
	n := uint64(v.num)
	desc, err := mem.user(v.addr.Desc, n*descSize)
	if err != nil {
		return fmt.Errorf("%w: descriptor table: %v", errRing, err)
	}
	avail, err := mem.user(v.addr.Avail, 4+2*n+2)
	if err != nil {
		return fmt.Errorf("%w: available ring: %v", errRing, err)
	}
	used, err := mem.user(v.addr.Used, 4+8*n+2)
	if err != nil {
		return fmt.Errorf("%w: used ring: %v", errRing, err)
	}
	v.desc, v.avail, v.used = desc, avail, used
	return nil
}

func (v *vring) availIdx() uint16 { return binary.LittleEndian.Uint16(v.avail[2:]) }

// pop takes the next available chain's head, if any.
func (v *vring) pop() (head uint16, ok bool, err error) {
	if v.lastAvail == v.availIdx() {
		return 0, false, nil
	}
	if d := v.availIdx() - v.lastAvail; uint32(d) > v.num {
		return 0, false, fmt.Errorf("%w: available index %d is %d ahead of %d, ring of %d", errRing, v.availIdx(), d, v.lastAvail, v.num)
	}
	slot := uint32(v.lastAvail) % v.num
	head = binary.LittleEndian.Uint16(v.avail[4+2*slot:])
	v.lastAvail++
	if uint32(head) >= v.num {
		return 0, false, fmt.Errorf("%w: head %d beyond a ring of %d", errRing, head, v.num)
	}
	return head, true, nil
}

// push returns chain head to the guest with n bytes written.
func (v *vring) push(head uint16, n uint32) {
	slot := uint32(v.usedIdx) % v.num
	binary.LittleEndian.PutUint32(v.used[4+8*slot:], uint32(head))
	binary.LittleEndian.PutUint32(v.used[4+8*slot+4:], n)
	v.usedIdx++
	binary.LittleEndian.PutUint16(v.used[2:], v.usedIdx)
}

// notify signals the guest unless it asked not to be.
func (v *vring) notify() {
	if v.call == nil || binary.LittleEndian.Uint16(v.avail[0:])&availFNoInterrupt != 0 {
		return
	}
	var one [8]byte
	one[0] = 1
	v.call.Write(one[:])
}

// chain walks the descriptor chain at head and calls fn for each buffer
// (its bytes in guest memory and whether the device may write it). A loop,
// an indirect descriptor (not offered) or a buffer outside guest memory
// ends the walk with an error.
func (v *vring) chain(mem *memory, head uint16, fn func(b []byte, writable bool) error) error {
	i := head
	for steps := uint32(0); ; steps++ {
		if steps >= v.num {
			return fmt.Errorf("%w: descriptor chain from %d longer than the ring (a loop)", errRing, head)
		}
		d := v.desc[uint32(i)*descSize:]
		addr := binary.LittleEndian.Uint64(d)
		n := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descFIndirect != 0 {
			return fmt.Errorf("%w: indirect descriptor %d (not negotiated)", errRing, i)
		}
		b, err := mem.guest(addr, uint64(n))
		if err != nil {
			return fmt.Errorf("%w: descriptor %d: %v", errRing, i, err)
		}
		if err := fn(b, flags&descFWrite != 0); err != nil {
			return err
		}
		if flags&descFNext == 0 {
			return nil
		}
		if uint32(next) >= v.num {
			return fmt.Errorf("%w: descriptor %d's next %d beyond a ring of %d", errRing, i, next, v.num)
		}
		i = next
	}
}
