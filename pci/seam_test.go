package pci_test

import (
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser"
)

// The protocol server serves *pci.Function through this interface.
var _ vfiouser.Function = (*pci.Function)(nil)
