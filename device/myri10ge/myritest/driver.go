package myritest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Options are the driver's module parameters and the guest facts that
// change what it does. The zero value is the default driver in an x86-64
// guest with no firmware file: one slice, MSI, MTU 9000.
type Options struct {
	// MTU is the interface MTU (myri10ge_initial_mtu; default 9000, the
	// range is 68..9000).
	MTU int
	// SmallBytes overrides the small-buffer threshold
	// (myri10ge_small_bytes; nil means automatic: 126 for MTU <= 1500,
	// else 1518). 0 disables the small ring.
	SmallBytes *int
	// MaxSlices is myri10ge_max_slices: 0 or 1 means one slice, -1 means
	// up to NumCPUs, N >= 2 up to N. More than one slice also needs an
	// MSI-X capability and an RSS firmware file in Firmware.
	MaxSlices int
	NumCPUs   int // netif_get_num_default_rss_queues(); default 2
	// NoMSI is myri10ge_msi=0: INTx and a single slice.
	NoMSI bool
	// NoDeassertWait is myri10ge_deassert_wait=0 (INTx only): the driver
	// clears valid itself instead of waiting for the device to.
	NoDeassertWait bool
	// Firmware are the files request_firmware finds (/lib/firmware), by
	// name (FWAligned, FWRSSUnaligned, ...). Without the file it asks for,
	// the driver adopts the running firmware.
	Firmware map[string][]byte
	// FWName is myri10ge_fw_name: load this file name for every load.
	FWName string
	// ForceFirmware is myri10ge_force_firmware: 1 assumes aligned
	// completions (tx boundary 4096), 2 unaligned (2048).
	ForceFirmware int
	// IntrCoalDelay is myri10ge_intr_coal_delay in µs (default 75).
	IntrCoalDelay *int
	// NoFlowControl is myri10ge_flow_control=0.
	NoFlowControl bool
	// FillThresh is myri10ge_fill_thresh (default 256).
	FillThresh int
	// RSSHash is myri10ge_rss_hash (default 5, source and destination port).
	RSSHash int
	// DCA is CONFIG_MYRI10GE_DCA: reset also asks GET_DCA_OFFSET.
	DCA bool
	// Multicast is the interface's multicast list at open (what the
	// stack has joined). nil means what Linux joins for an IPv4+IPv6
	// interface: 01:00:5e:00:00:01, 33:33:00:00:00:01 and the solicited-node
	// group of the MAC's link-local address.
	Multicast []net.HardwareAddr
	// Promisc and AllMulti are IFF_PROMISC and IFF_ALLMULTI.
	Promisc, AllMulti bool
	// RxCsumOff is ethtool -K rx off: received checksums are not checked.
	RxCsumOff bool
	// ZeroUninit fills the command words and pad bytes the driver leaves
	// uninitialised with zeros, as the newest kernels do for some of them.
	// By default they carry Garbage, as the stack contents of older
	// kernels: the device must ignore them.
	ZeroUninit bool
	// BoardSpan is the BAR0 length (pci_resource_len); default 16 MiB.
	BoardSpan int
	// StrictTiming makes every command and confirmation timeout a plain
	// wall-clock budget, as in the guest. By default a posted-write Bus
	// (Flusher) gets one flush after the budget: a response that is there
	// once the device has handled the command's stores is accepted and
	// counted in Stats.SlowResponses (a loaded test host, not the device).
	StrictTiming bool
	// LinkTimeout bounds Open's wait for the link-up interrupt (default 2 s).
	LinkTimeout time.Duration
}

// Garbage is the value of the command words and pad bytes the driver
// leaves uninitialised (unless Options.ZeroUninit).
const Garbage = 0xDEADBEEF

// Sentinel errors; test them with errors.Is.
var (
	// ErrTimeout: a command, handoff or interrupt never came, or came late.
	ErrTimeout = errors.New("myritest: timed out")
	// ErrProtocol: the device broke the driver/firmware protocol in a way
	// that would hang, crash or corrupt the real driver (or that the real
	// driver complains about).
	ErrProtocol = errors.New("myritest: device protocol violation")
	// ErrRingFull: the send ring has too few free slots (NETDEV_TX_BUSY),
	// or the queue is stopped.
	ErrRingFull = errors.New("myritest: send ring full")
	// ErrState: the call does not fit the driver's state (e.g. Xmit when
	// the interface is down).
	ErrState = errors.New("myritest: wrong driver state")
)

// Level is a kernel log level.
type Level uint8

const (
	Info Level = iota
	Warn
	Err
)

func (l Level) String() string {
	switch l {
	case Info:
		return "info"
	case Warn:
		return "warn"
	}
	return "err"
}

// LogEntry is a line the Linux driver would have printed (dmesg), or a
// violation the fake driver noticed (also returned as an error).
type LogEntry struct {
	Level Level
	Msg   string
	// Benign marks warnings every device causes on a given path, such as
	// the firmware loader's complaints when no firmware file exists and
	// the driver adopts the running firmware. Complaints leaves them out.
	Benign bool
}

func (e LogEntry) String() string { return e.Level.String() + ": " + e.Msg }

// Driver states (mgp->running).
const (
	stateStopped = iota
	stateStopping
	stateStarting
	stateRunning
)

// Driver is the fake myri10ge driver bound to one card.
//
// Its methods may be called from several goroutines (as the kernel runs
// the transmit path and the interrupt handler concurrently); each holds
// the driver's lock except while it waits for an interrupt.
type Driver struct {
	bus  Bus
	mem  *Memory
	irq  Interrupts
	opts Options

	mu sync.Mutex

	// Probe results.
	probed      bool
	vsOffset    int // vendor-specific capability (watchdog reboot window)
	pcieCap     int
	msiCap      int
	msixCap     int
	sramSize    uint32
	eeprom      EEPROM
	mac         [6]byte // dev_addr
	txBoundary  int
	fwName      string
	fwVersion   string
	fwVer       [3]int
	rxFilterBug bool
	maxTSO6     uint32
	tso6        bool
	maxIntr     int // max_intr_slots
	numSlices   int
	numTxQueues int // real_num_tx_queues
	mcastFW     bool
	cmdBus      uint64 // the 8-byte response buffer
	dmaBW       [3]uint32
	irqDeassert uint64
	coalOff     uint64
	coalDelay   int
	pause       bool
	linkState   uint32
	rdmaTags    uint32
	downCnt     int
	linkChanges int
	mode        IRQMode // enabled interrupts, 0 when none
	running     int

	// Watchdog (§7.4).
	watchdogPause  uint32
	watchdogResets int
	resetRecovered bool // myri10ge_reset_recover spent
	rebooted       bool
	savedCommand   uint16 // pci_save_state's Command register

	// Interface state.
	mtu        int
	smallBytes int
	bigBytes   int
	bigPow2    int
	promisc    bool
	allMulti   bool
	mcast      []net.HardwareAddr

	ss []*sliceState

	lateCmd Cmd // a command that timed out; its response may still land
	late    bool

	log     []LogEntry
	stats   Stats
	backlog []Event
}

// Stats count what the driver did.
type Stats struct {
	Commands      int // mailbox commands sent
	SlowResponses int // answered only after a flush (see Options.StrictTiming)
	Interrupts    int // interrupt handlers run
	TxPackets     int // packets posted
	TxCompleted   int // packets completed by send_done_count
	TxDropped     int // packets freed unsent at close
	RxFrames      int
	RxBytes       int
	Linearized    int // non-TSO packets copied to one buffer to fit 12 descriptors
	StopQueue     int // times the send queue was stopped
	WakeQueue     int
}

// New returns a driver for the card behind bus, allocating its DMA
// buffers in mem and waiting for interrupts through irq (nil: poll the
// interrupt block's valid byte, as with interrupts off).
func New(bus Bus, mem *Memory, irq Interrupts, opts Options) *Driver {
	if opts.MTU == 0 {
		opts.MTU = maxEtherMTU - ethHLen
	}
	if opts.NumCPUs == 0 {
		opts.NumCPUs = 2
	}
	if opts.FillThresh == 0 {
		opts.FillThresh = fillThreshold
	}
	if opts.RSSHash == 0 {
		opts.RSSHash = rssHashSrcDstPort
	}
	if opts.BoardSpan == 0 {
		opts.BoardSpan = BAR0Size
	}
	if opts.LinkTimeout == 0 {
		opts.LinkTimeout = 2 * time.Second
	}
	coal := 75
	if opts.IntrCoalDelay != nil {
		coal = *opts.IntrCoalDelay
	}
	mtu := min(max(opts.MTU, minMTU), maxEtherMTU-ethHLen)
	d := &Driver{
		bus: bus, mem: mem, irq: irq, opts: opts,
		coalDelay: coal,
		pause:     !opts.NoFlowControl,
		mtu:       mtu,
		promisc:   opts.Promisc,
		allMulti:  opts.AllMulti,
		numSlices: 1,
	}
	return d
}

// logf records a kernel log line.
func (d *Driver) logf(l Level, format string, args ...any) {
	d.log = append(d.log, LogEntry{Level: l, Msg: fmt.Sprintf(format, args...)})
}

// benign records a warning every device causes on this path.
func (d *Driver) benign(l Level, format string, args ...any) {
	d.log = append(d.log, LogEntry{l, fmt.Sprintf(format, args...), true})
}

// violation records a protocol violation and returns it as an error.
func (d *Driver) violation(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	d.log = append(d.log, LogEntry{Level: Err, Msg: msg})
	return fmt.Errorf("%w: %s", ErrProtocol, msg)
}

// locked returns what read reads under the driver's lock: the accessors
// below hand out snapshots of state that its methods change.
func locked[T any](d *Driver, read func() T) T {
	d.mu.Lock()
	defer d.mu.Unlock()
	return read()
}

// Log returns every line logged so far: what dmesg would show, plus the
// violations the fake driver found.
func (d *Driver) Log() []LogEntry {
	return locked(d, func() []LogEntry { return append([]LogEntry(nil), d.log...) })
}

// Complaints returns the warnings and errors in Log: a device that the
// driver is happy with leaves none.
func (d *Driver) Complaints() []string {
	var out []string
	for _, e := range d.Log() {
		if e.Level >= Warn && !e.Benign {
			out = append(out, e.String())
		}
	}
	return out
}

// CheckClean returns an error listing every complaint, or nil.
func (d *Driver) CheckClean() error {
	if c := d.Complaints(); len(c) > 0 {
		return fmt.Errorf("myritest: the driver complained:\n\t%s", strings.Join(c, "\n\t"))
	}
	return nil
}

// Stats returns the driver's counters.
func (d *Driver) Stats() Stats { return locked(d, func() Stats { return d.stats }) }

// MAC returns the interface address (dev_addr).
func (d *Driver) MAC() net.HardwareAddr {
	return locked(d, func() net.HardwareAddr { return append(net.HardwareAddr(nil), d.mac[:]...) })
}

// EEPROM returns what probe parsed from the EEPROM strings.
func (d *Driver) EEPROM() EEPROM { return locked(d, func() EEPROM { return d.eeprom }) }

// Firmware reports the firmware name ("adopted" or a file name), its
// version string and the tx boundary the driver settled on.
func (d *Driver) Firmware() (name, version string, txBoundary int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fwName, d.fwVersion, d.txBoundary
}

// Slices returns the number of slices (queues) in use.
func (d *Driver) Slices() int { return locked(d, func() int { return d.numSlices }) }

// IRQMode returns the interrupt mechanism the driver enabled (0 while the
// interface is down).
func (d *Driver) IRQMode() IRQMode { return locked(d, func() IRQMode { return d.mode }) }

// Link returns the link state the driver believes in (link_up of the last
// statistics update; ^0 until the first one after open).
func (d *Driver) Link() uint32 { return locked(d, func() uint32 { return d.linkState }) }

// TakeBacklog returns and forgets the events of interrupts that Open,
// Close and Probe serviced on their own (e.g. frames that arrived while
// Open waited for the link).
func (d *Driver) TakeBacklog() []Event {
	return locked(d, func() []Event {
		b := d.backlog
		d.backlog = nil
		return b
	})
}

// uninit is the value of a word the driver leaves uninitialised.
func (d *Driver) uninit() uint32 {
	if d.opts.ZeroUninit {
		return 0
	}
	return Garbage
}

// cmdWords is the driver's struct myri10ge_cmd: reused between commands
// within a function, so stale values travel in unused words.
type cmdWords struct{ d0, d1, d2 uint32 }

// freshCmd is a struct myri10ge_cmd on the stack: uninitialised.
func (d *Driver) freshCmd() cmdWords {
	u := d.uninit()
	return cmdWords{u, u, u}
}
