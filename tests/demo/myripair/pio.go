package myripair

import "os"

// EnvPIO selects the NICs' pio= key (device/myri10ge, issue 15) for the
// demo and the e2e scenarios. Unset or "mmap": the device's default, the
// rings mmapped, attached with QEMU's default vfio-user-pci properties
// (QEMU turns posted writes off by itself once a region is mmappable).
// "trap": every BAR0 store a message, for comparison only; trap mode
// needs trapProps (see there).
const EnvPIO = "MYRIEMU_PIO"

// trapProps are the vfio-user-pci properties a pio=trap NIC needs. With
// nothing mmappable QEMU posts BAR writes, and the driver's atomic
// commands (promisc, allmulti, multicast joins: 1 ms of udelay polling)
// time out on a loaded 2-core TCG host ("command 21 timed out").
// x-no-posted-writes=on makes each store wait until myriemu has run it,
// so a command's response is there at the driver's first poll. It is an
// experimental QEMU property: trap mode is for comparison only.
var trapProps = map[string]any{"x-no-posted-writes": true}

// PIOKey is the --device suffix for EnvPIO, or "".
func PIOKey() string {
	if v := os.Getenv(EnvPIO); v != "" {
		return ",pio=" + v
	}
	return ""
}

// DeviceProps are the vfio-user-pci properties for EnvPIO's mode: none
// (QEMU's defaults) but in trap mode.
func DeviceProps() map[string]any {
	if os.Getenv(EnvPIO) == "trap" {
		return trapProps
	}
	return nil
}
