package pci

// Type 0 configuration header offsets and bits (PCI Local Bus Specification
// 3.0, section 6.1; PCIe Base Specification, section 7.5.1).
const (
	regVendorID       = 0x00
	regDeviceID       = 0x02
	regCommand        = 0x04
	regStatus         = 0x06
	regRevision       = 0x08
	regClass          = 0x09 // 3 bytes: programming interface, subclass, base class
	regCacheLineSize  = 0x0c
	regLatencyTimer   = 0x0d
	regHeaderType     = 0x0e
	regBAR0           = 0x10 // six 4-byte registers
	regSubsystemVenID = 0x2c
	regSubsystemID    = 0x2e
	regROM            = 0x30
	regCapPtr         = 0x34
	regInterruptLine  = 0x3c
	regInterruptPin   = 0x3d

	capStart = 0x40  // first byte after the type 0 header
	extStart = 0x100 // PCIe extended configuration space

	configSizePCI  = 256
	configSizePCIe = 4096
)

// Command register bits (PCI 3.0, 6.2.2).
const (
	cmdIO          = 1 << 0
	cmdMemory      = 1 << 1
	cmdMaster      = 1 << 2
	cmdParity      = 1 << 6
	cmdSERR        = 1 << 8
	cmdINTxDisable = 1 << 10
)

// Status register bits (PCI 3.0, 6.2.3).
const (
	statusInterrupt = 1 << 3
	statusCapList   = 1 << 4
	// The error bits software clears by writing 1: master data parity
	// error, signaled/received target abort, received master abort,
	// signaled system error, detected parity error.
	statusRW1C = 1<<8 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15
)

// BAR register type bits (PCI 3.0, 6.2.5.1).
const (
	barIO       = 1 << 0
	barMem64    = 2 << 1
	barPrefetch = 1 << 3
)

// Capability IDs (PCI Code and ID Assignment Specification, section 2).
const (
	capIDPM     = 0x01
	capIDMSI    = 0x05
	capIDVendor = 0x09
	capIDPCIe   = 0x10
	capIDMSIX   = 0x11
)

// Power management capability (PCI Bus Power Management Interface 1.2).
const (
	pmLen         = 8
	pmPMC         = 2
	pmPMCSR       = 4
	pmVersion12   = 3      // PMC bits 2:0
	pmNoSoftReset = 1 << 3 // PMCSR: D3hot -> D0 keeps the function's state
	pmStateMask   = 3      // PMCSR bits 1:0: D0 or D3hot here (no D1/D2)
)

// MSI capability (PCI 3.0, 6.8.1).
const (
	msiControl     = 2
	msiAddrLo      = 4
	msiEnable      = 1 << 0
	msiMMEMask     = 7 << 4 // multiple message enable
	msi64Bit       = 1 << 7
	msiPerVecMask  = 1 << 8
	msiMMCShift    = 1
	msiMMEShift    = 4
	msiDataLen     = 2
	msiReservedLen = 2
)

// MSI-X capability and table (PCI 3.0, 6.8.2).
const (
	msixLen         = 12
	msixControl     = 2
	msixTableReg    = 4
	msixPBAReg      = 8
	msixEnable      = 1 << 15
	msixFuncMask    = 1 << 14
	msixEntrySize   = 16
	msixVectorCtrl  = 12 // offset of Vector Control inside an entry
	msixEntryMasked = 1  // Vector Control bit 0
	msixMaxVectors  = 2048
)

// Vendor-specific capability (PCI 3.0, 6.7): ID, next, length, body.
const (
	vendorLength = 2
	vendorBody   = 3
)

// PCI Express capability, version 2 (PCIe Base Specification 2.0, 7.8).
const (
	pcieLen     = 0x3c
	pcieFlags   = 0x02
	pcieDevCap  = 0x04
	pcieDevCtl  = 0x08
	pcieDevSta  = 0x0a
	pcieLnkCap  = 0x0c
	pcieLnkCtl  = 0x10
	pcieLnkSta  = 0x12
	pcieLnkCap2 = 0x2c
	pcieLnkCtl2 = 0x30

	pcieVersion2 = 2 // Capabilities register bits 3:0; bits 7:4 = 0 is "PCI Express Endpoint"

	pcieDevCapRBER = 1 << 15 // role-based error reporting, set by every 1.1+ function

	// DEVCTL: error reporting enables (3:0), relaxed ordering (4), max
	// payload (7:5), no snoop (11), max read request (14:12) are RW.
	// Extended tag, phantom functions, aux power and FLR are not
	// supported and read 0.
	pcieDevCtlWritable = 0x78ff
	// DEVCTL reset value: relaxed ordering and no snoop enabled, max
	// read request 512 bytes (PCIe 2.0, 7.8.4).
	pcieDevCtlDefault = 1<<4 | 1<<11 | 2<<12
	pcieDevStaRW1C    = 0x0f // correctable/non-fatal/fatal/unsupported request detected

	// LNKCTL: ASPM control (1:0), read completion boundary (3), common
	// clock (6), extended synch (7). Link disable/retrain are reserved
	// for endpoints.
	pcieLnkCtlWritable = 0x00cb
)
