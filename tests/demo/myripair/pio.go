package myripair

import "os"

// EnvPIO selects the NICs' pio= key (device/myri10ge, issue 15) for the
// demo and the e2e scenarios: unset keeps the device's default (trap);
// "mmap" serves the rings mmapped and attaches with QEMU's default
// properties (QEMU turns posted writes off by itself once a region is
// mmappable, so x-no-posted-writes is not needed).
const EnvPIO = "MYRIEMU_PIO"

// pioKey is the --device suffix for EnvPIO, or "".
func pioKey() string {
	if v := os.Getenv(EnvPIO); v != "" {
		return ",pio=" + v
	}
	return ""
}

// deviceProps are the vfio-user-pci properties for EnvPIO's mode.
func deviceProps() map[string]any {
	if os.Getenv(EnvPIO) == "mmap" {
		return nil
	}
	return DeviceProps
}
