package vm

import (
	"context"
	"encoding/json"
	"fmt"
)

// PCIDevice is one function as QEMU's query-pci reports it.
type PCIDevice struct {
	Bus, Slot, Function int
	VendorID, DeviceID  uint16
	Class               uint16
	QdevID              string // "" for devices without an id
	Regions             []PCIRegion
}

// PCIRegion is one BAR as QEMU has it programmed.
type PCIRegion struct {
	BAR  int
	Type string // "memory" or "io"
	// Address is where the BAR is mapped, -1 while it is unassigned.
	Address int64
	Size    uint64
	Prefetch,
	Mem64 bool
}

// Addr returns the device's address as "bb:ss.f".
func (d PCIDevice) Addr() string {
	return fmt.Sprintf("%02x:%02x.%x", d.Bus, d.Slot, d.Function)
}

// query-pci reply, the parts we use (QAPI PciInfo / PciDeviceInfo).
type qPCIInfo struct {
	Bus     int          `json:"bus"`
	Devices []qPCIDevice `json:"devices"`
}

type qPCIDevice struct {
	Bus       int `json:"bus"`
	Slot      int `json:"slot"`
	Function  int `json:"function"`
	ClassInfo struct {
		Class uint16 `json:"class"`
	} `json:"class_info"`
	ID struct {
		Vendor uint16 `json:"vendor"`
		Device uint16 `json:"device"`
	} `json:"id"`
	QdevID    string `json:"qdev_id"`
	PCIBridge *struct {
		Devices []qPCIDevice `json:"devices"`
	} `json:"pci_bridge"`
	Regions []struct {
		BAR      int    `json:"bar"`
		Type     string `json:"type"`
		Address  int64  `json:"address"`
		Size     uint64 `json:"size"`
		Prefetch bool   `json:"prefetch"`
		Mem64    bool   `json:"mem_type_64"`
	} `json:"regions"`
}

// ParseQueryPCI flattens a query-pci "return" value: devices behind bridges
// (such as the pcie-root-port each vfio-user device sits on) are listed
// after their bridge.
func ParseQueryPCI(raw json.RawMessage) ([]PCIDevice, error) {
	var buses []qPCIInfo
	if err := json.Unmarshal(raw, &buses); err != nil {
		return nil, fmt.Errorf("vm: query-pci: %w", err)
	}
	var out []PCIDevice
	var walk func(ds []qPCIDevice, depth int) error
	walk = func(ds []qPCIDevice, depth int) error {
		if depth > 32 {
			return fmt.Errorf("vm: query-pci: bridges nested too deep")
		}
		for _, d := range ds {
			pd := PCIDevice{
				Bus: d.Bus, Slot: d.Slot, Function: d.Function,
				VendorID: d.ID.Vendor, DeviceID: d.ID.Device,
				Class: d.ClassInfo.Class, QdevID: d.QdevID,
			}
			for _, r := range d.Regions {
				pd.Regions = append(pd.Regions, PCIRegion{
					BAR: r.BAR, Type: r.Type, Address: r.Address, Size: r.Size,
					Prefetch: r.Prefetch, Mem64: r.Mem64,
				})
			}
			out = append(out, pd)
			if d.PCIBridge != nil {
				if err := walk(d.PCIBridge.Devices, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, b := range buses {
		if err := walk(b.Devices, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PCIDevices runs query-pci and returns every function QEMU has, flattened.
func (m *Machine) PCIDevices(ctx context.Context) ([]PCIDevice, error) {
	raw, err := m.Execute(ctx, "query-pci", nil)
	if err != nil {
		return nil, err
	}
	return ParseQueryPCI(raw)
}

// Device returns the function with the given qdev id, as QEMU sees it.
func (m *Machine) Device(ctx context.Context, qdevID string) (PCIDevice, error) {
	devs, err := m.PCIDevices(ctx)
	if err != nil {
		return PCIDevice{}, err
	}
	for _, d := range devs {
		if d.QdevID == qdevID {
			return d, nil
		}
	}
	return PCIDevice{}, fmt.Errorf("vm: query-pci: no device with id %q", qdevID)
}
