// Package myritest implements a fake Linux myri10ge driver for testing
// Myri-10G device models without QEMU.
//
// A Driver makes the register accesses the unmodified driver makes, with
// the same sizes and in the same order, sends the same command sequences
// (stale and uninitialised command words included), posts receive
// buffers in groups of 8 and send descriptors in the driver's store order,
// and runs the same interrupt and token protocol. It checks every answer
// as strictly as the real driver depends on it, and reports what the real
// driver would choke on as errors wrapping ErrProtocol or ErrTimeout:
// a late or missing command response, a zero DMA_TEST tick count (a guest
// divide error), a send_done_count that goes back or past the posted
// packets, an interrupt block rewritten while the driver holds the IRQ
// token, valid & 1 while it holds the RX token, rdma_tags_available != 15,
// an rx_done slot larger than SET_MTU, its buffers or the posted buffers,
// a receive buffer the device never wrote (wrong ring) or wrote past the
// frame, slots filled out of order, a checksum that is not the sum over
// frame[14:], a missing link-up or link-down report, ring sizes and BAR0
// offsets the driver cannot use. What the real driver only logs is in Log
// and Complaints.
//
// The card is reached through a Bus (BAR0 and config space) and an
// Interrupts; guest memory is a Memory. VFIOUser adapts a
// vfiousertest.Client (a real vfio-user socket, posted writes as QEMU
// sends them); Function adapts a pci.Function in the same process.
//
// A device test, over a socket:
//
//	c, _ := vfiousertest.Dial(ctx, sock)
//	defer c.Close()
//	c.Negotiate()
//	mem, _ := myritest.NewVFIOUserMemory(t, c, 32<<20, 1<<32)
//	bus := myritest.NewVFIOUser(t, c)
//	d := myritest.New(bus, mem, bus, myritest.Options{MTU: 1500})
//	if err := d.Probe(ctx); err != nil { ... }   // adopt, dummy RDMA, reset sequence
//	if err := d.Open(ctx); err != nil { ... }    // rings, ETHERNET_UP, link-up IRQ, rx mode
//	d.Xmit(0, myritest.FramePacket(frame))       // descriptors + doorbell
//	d.WaitTx(ctx, 0)                              // interrupts until send_done_count catches up
//	frames, err := d.Receive(ctx, 0, 1)           // interrupts + NAPI until a frame arrives
//	d.Close(ctx)                                  // ETHERNET_DOWN, link-down IRQ
//	d.Remove(ctx)                                 // everything freed: mem.InUse() == 0
//	if err := d.CheckClean(); err != nil { t.Error(err) }
//
// In the same process, pci.NewFunction(dev, log) then
// mem, _ := myritest.AttachRAM(t, f, size, iova) and
// bus := myritest.NewFunction(t, f) replace the first four lines.
//
// Options are the module parameters (MTU, slices, firmware files, MSI or
// INTx, small buffer size, ...). Beyond probe, open, close and the data
// path, the driver's other entry points are there too: SetMTU, SetMACAddress,
// SetRxMode, SetPause, SetCoalesce, LED, Suspend and Resume, WatchdogTick
// and WatchdogReset. Cmd sends raw commands for tests of sequences the
// driver does not make. Section numbers (§) in this
// package refer to shared/reference/myri10ge-device-interface.md; the
// driver source (drivers/net/ethernet/myricom/myri10ge/myri10ge.c) is the
// final word, and the function each method follows is named in its doc.
package myritest
