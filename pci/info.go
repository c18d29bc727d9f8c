package pci

// Region indexes of a PCI function, as VFIO numbers them.
const (
	RegionBAR0   = 0 // .. RegionBAR0+5
	RegionROM    = 6
	RegionConfig = 7
	RegionVGA    = 8

	NumRegions = 9
)

// RegionInfo answers GET_REGION_INFO for one region.
type RegionInfo struct {
	Size  uint64
	Flags RegionFlags
	// Fd is the file to send with the reply when Flags has RegionMmap, or
	// -1. It stays owned by the function; the transport sends a duplicate.
	Fd int
	// MmapOffset is the offset of the region in Fd.
	MmapOffset uint64
	// Sparse, when non-empty, limits what the client may mmap to these
	// areas (the sparse-mmap capability).
	Sparse []Area
}

// RegionFlags are VFIO region info flags.
type RegionFlags uint32

const (
	RegionRead  RegionFlags = 1 << 0
	RegionWrite RegionFlags = 1 << 1
	RegionMmap  RegionFlags = 1 << 2
)

// NumIRQIndexes is the number of VFIO IRQ indexes a function reports
// (INTx, MSI, MSI-X, ERR, REQ).
const NumIRQIndexes = 5

// IRQInfo answers GET_IRQ_INFO for one index.
type IRQInfo struct {
	Count uint32
	Flags IRQFlags
}

// IRQFlags are VFIO IRQ info flags.
type IRQFlags uint32

const (
	IRQEventfd    IRQFlags = 1 << 0
	IRQMaskable   IRQFlags = 1 << 1
	IRQAutomasked IRQFlags = 1 << 2
	IRQNoResize   IRQFlags = 1 << 3
)
