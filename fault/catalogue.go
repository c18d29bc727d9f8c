// Package fault holds seeded, named injection points that the device doors
// (dma, msi, bar, fw, wire, pci) consult, the rules that arm them, and the
// log of their firings that a later run can replay.
package fault

import "fmt"

// Door is where a fault attaches: one of the narrow doors a device model
// reaches the outside world through.
type Door uint8

const (
	DMA  Door = iota // guest memory (dma.Space)
	MSI              // interrupts (msi.Raiser)
	BAR              // trapped BAR accesses (pci.Function)
	FW               // the firmware mailbox and its DMA confirmations
	Wire             // the emulated wire (fabric.Switch)
	PCI              // config space, reset, removal
	numDoors
)

var doorNames = [numDoors]string{"dma", "msi", "bar", "fw", "wire", "pci"}

func (d Door) String() string {
	if d < numDoors {
		return doorNames[d]
	}
	return fmt.Sprintf("Door(%d)", uint8(d))
}

// Kind is one fault type of the catalogue.
type Kind uint8

// The fault types. Their names, doors, points and arguments are in kinds.
const (
	None Kind = iota // counts and moves states, injects nothing

	DMAReadFail
	DMAReadShort
	DMAReadPoison
	DMAWriteDrop
	DMAWriteReorder
	DMAWriteTorn
	DMAIOVAUnmapped
	DMAConfirmMissing
	DMAStatsFreeze

	MSIDrop
	MSISpurious
	MSIDelay
	MSIMisroute
	MSIStorm

	BARReadAllOnes
	BARWriteDrop
	BARWCTear
	BARSRAMCorrupt

	FWCmdTimeout
	FWCmdError
	FWCmdSlow
	FWReboot
	FWHeaderBad
	FWDMATestFail
	FWCapsLie

	WireLinkFlap
	WireLoss
	WireCorrupt
	WireDup
	WireReorder
	WireDelay
	WireRate
	WireSlot
	WirePauseFlood
	WireRxOverflow
	WireFrameBad

	PCISurpriseRemove
	PCIResetFail

	numKinds
)

// Spec describes a fault type: the name users see, the rule spelling
// door.point=action that arms it, the operations (Op.Point values) it
// applies to, and its arguments with their defaults.
type Spec struct {
	Name   string
	Door   Door
	Point  string   // rule spelling: door.Point=Action
	Action string   // rule spelling
	On     []string // Op.Point values the door reports that this fault applies to
	Args   []ArgSpec
	// Pending: the door does not consult this fault yet; a rule naming
	// it is refused rather than armed to no effect.
	Pending bool
}

// ArgSpec is one argument of a fault type. The first one may be given
// positionally: fw.cmd=error(range).
type ArgSpec struct {
	Name    string
	Default string
	Kind    argKind
	Choices []string // for argChoice
}

type argKind uint8

const (
	argInt argKind = iota
	argDuration
	argChoice
)

var (
	rw          = []string{"read", "write"}
	onRead      = []string{"read"}
	onWrite     = []string{"write"}
	onRaise     = []string{"raise"}
	onCmd       = []string{"cmd", "dmatest", "caps"} // every mailbox command
	onFrame     = []string{"frame"}
	cmdErrors   = []string{"unknown", "unaligned", "range", "other"}
	badFrames   = []string{"runt", "oversize"}
	anyDoorNone = []string{"read", "write", "raise", "cmd", "frame", "config", "reset", "confirm", "stats", "header", "dmatest", "caps", "reboot"}
)

// kinds is the catalogue, indexed by Kind. docs/faults.md describes each.
var kinds = [numKinds]Spec{
	None: {Name: "none", Point: "*", Action: "none", On: anyDoorNone},

	DMAReadFail:       {Name: "dma.read.fail", Door: DMA, Point: "read", Action: "fail", On: onRead},
	DMAReadShort:      {Name: "dma.read.short", Door: DMA, Point: "read", Action: "short", On: onRead, Args: []ArgSpec{{Name: "bytes", Default: "-1"}}},
	DMAReadPoison:     {Name: "dma.read.poison", Door: DMA, Point: "read", Action: "poison", On: onRead, Args: []ArgSpec{{Name: "mask", Default: "0xff"}, {Name: "offset", Default: "-1"}}},
	DMAWriteDrop:      {Name: "dma.write.drop", Door: DMA, Point: "write", Action: "drop", On: onWrite},
	DMAWriteReorder:   {Name: "dma.write.reorder", Door: DMA, Point: "write", Action: "reorder", On: onWrite},
	DMAWriteTorn:      {Name: "dma.write.torn", Door: DMA, Point: "write", Action: "torn", On: onWrite, Args: []ArgSpec{{Name: "bytes", Default: "-1"}}},
	DMAIOVAUnmapped:   {Name: "dma.iova.unmapped", Door: DMA, Point: "iova", Action: "unmapped", On: rw},
	DMAConfirmMissing: {Name: "dma.confirm.missing", Door: DMA, Point: "confirm", Action: "missing", On: []string{"confirm"}},
	DMAStatsFreeze:    {Name: "dma.stats.freeze", Door: DMA, Point: "stats", Action: "freeze", On: []string{"stats"}},

	MSIDrop:     {Name: "msi.drop", Door: MSI, Point: "raise", Action: "drop", On: onRaise},
	MSISpurious: {Name: "msi.spurious", Door: MSI, Point: "raise", Action: "spurious", On: onRaise, Args: []ArgSpec{{Name: "count", Default: "1"}}},
	MSIDelay:    {Name: "msi.delay", Door: MSI, Point: "raise", Action: "delay", On: onRaise, Args: []ArgSpec{{Name: "delay", Default: "1ms", Kind: argDuration}}},
	MSIMisroute: {Name: "msi.misroute", Door: MSI, Point: "raise", Action: "misroute", On: onRaise, Args: []ArgSpec{{Name: "to", Default: "-1"}}},
	MSIStorm:    {Name: "msi.storm", Door: MSI, Point: "raise", Action: "storm", On: onRaise, Args: []ArgSpec{{Name: "count", Default: "100"}}},

	BARReadAllOnes: {Name: "bar.read.allones", Door: BAR, Point: "read", Action: "allones", On: onRead},
	BARWriteDrop:   {Name: "bar.write.drop", Door: BAR, Point: "write", Action: "drop", On: onWrite},
	BARWCTear:      {Name: "bar.wc.tear", Door: BAR, Point: "wc", Action: "tear", On: onWrite, Args: []ArgSpec{{Name: "bytes", Default: "-1"}}},
	BARSRAMCorrupt: {Name: "bar.sram.corrupt", Door: BAR, Point: "sram", Action: "corrupt", On: onRead, Args: []ArgSpec{{Name: "mask", Default: "0x01"}}},

	FWCmdTimeout:  {Name: "fw.cmd.timeout", Door: FW, Point: "cmd", Action: "timeout", On: onCmd},
	FWCmdError:    {Name: "fw.cmd.error", Door: FW, Point: "cmd", Action: "error", On: onCmd, Args: []ArgSpec{{Name: "code", Default: "unknown", Kind: argChoice, Choices: cmdErrors}}},
	FWCmdSlow:     {Name: "fw.cmd.slow", Door: FW, Point: "cmd", Action: "slow", On: onCmd, Args: []ArgSpec{{Name: "delay", Default: "14ms", Kind: argDuration}}},
	FWReboot:      {Name: "fw.reboot", Door: FW, Point: "nic", Action: "reboot", On: onWrite},
	FWHeaderBad:   {Name: "fw.header.bad", Door: FW, Point: "header", Action: "bad", On: []string{"header"}},
	FWDMATestFail: {Name: "fw.dmatest.fail", Door: FW, Point: "dmatest", Action: "fail", On: []string{"dmatest"}},
	FWCapsLie:     {Name: "fw.caps.lie", Door: FW, Point: "caps", Action: "lie", On: []string{"caps"}, Args: []ArgSpec{{Name: "value", Default: "1"}}},

	WireLinkFlap:   {Name: "wire.link.flap", Door: Wire, Point: "link", Action: "flap", On: onFrame, Args: []ArgSpec{{Name: "down", Default: "100ms", Kind: argDuration}}},
	WireLoss:       {Name: "wire.loss", Door: Wire, Point: "frame", Action: "loss", On: onFrame},
	WireCorrupt:    {Name: "wire.corrupt", Door: Wire, Point: "frame", Action: "corrupt", On: onFrame, Args: []ArgSpec{{Name: "mask", Default: "0x01"}}},
	WireDup:        {Name: "wire.dup", Door: Wire, Point: "frame", Action: "dup", On: onFrame, Args: []ArgSpec{{Name: "count", Default: "1"}}},
	WireReorder:    {Name: "wire.reorder", Door: Wire, Point: "frame", Action: "reorder", On: onFrame},
	WireDelay:      {Name: "wire.delay", Door: Wire, Point: "frame", Action: "delay", On: onFrame, Args: []ArgSpec{{Name: "delay", Default: "10ms", Kind: argDuration}}},
	WireRate:       {Name: "wire.rate", Door: Wire, Point: "frame", Action: "rate", On: onFrame, Args: []ArgSpec{{Name: "bps", Default: "100000000"}}},
	WireSlot:       {Name: "wire.slot", Door: Wire, Point: "frame", Action: "slot", On: onFrame, Args: []ArgSpec{{Name: "slot", Default: "10ms", Kind: argDuration}}},
	WirePauseFlood: {Name: "wire.pause.flood", Door: Wire, Point: "pause", Action: "flood", On: onFrame, Args: []ArgSpec{{Name: "quanta", Default: "65535"}, {Name: "period", Default: "1ms", Kind: argDuration}, {Name: "for", Default: "5s", Kind: argDuration}}},
	WireRxOverflow: {Name: "wire.rx.overflow", Door: Wire, Point: "rx", Action: "overflow", On: onFrame},
	WireFrameBad:   {Name: "wire.frame.bad", Door: Wire, Point: "frame", Action: "bad", On: onFrame, Args: []ArgSpec{{Name: "kind", Default: "runt", Kind: argChoice, Choices: badFrames}}},

	PCISurpriseRemove: {Name: "pci.surprise-remove", Door: PCI, Point: "cfg", Action: "surprise-remove", On: []string{"config"}},
	PCIResetFail:      {Name: "pci.reset-fail", Door: PCI, Point: "reset", Action: "fail", On: []string{"reset"}},
}

// Kinds returns the catalogue (every fault type but none), in Kind order.
func Kinds() []Spec {
	out := make([]Spec, 0, numKinds-1)
	for k := None + 1; k < numKinds; k++ {
		out = append(out, kinds[k])
	}
	return out
}

func (k Kind) String() string {
	if k < numKinds {
		return kinds[k].Name
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Spec returns k's description.
func (k Kind) Spec() Spec { return kinds[k] }

// lookupKind finds the type spelled door.point=action.
func lookupKind(door Door, point, action string) (Kind, bool) {
	if action == "none" {
		return None, true
	}
	for k := None + 1; k < numKinds; k++ {
		s := &kinds[k]
		if s.Door == door && s.Point == point && s.Action == action {
			return k, true
		}
	}
	return 0, false
}

func parseDoor(s string) (Door, bool) {
	for d, n := range doorNames {
		if n == s {
			return Door(d), true
		}
	}
	return 0, false
}
