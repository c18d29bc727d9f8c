package testdev

import (
	"fmt"

	"github.com/sirupsen/logrus"
)

// Guest mistakes are logged at Warn through the device's ratelog.Limiter,
// keyed by the kind of mistake (the message).

// warning is a guest mistake to log once the device lock is released.
type warning struct {
	msg    string // constant; also the rate-limit key
	fields logrus.Fields
}

func (d *Device) warnf(w warning) {
	d.warn.Warn(d.log.WithFields(w.fields), w.msg, w.msg)
}

// hex formats an address for a log field.
func hex(v uint64) string { return fmt.Sprintf("%#x", v) }
