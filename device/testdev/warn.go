package testdev

import (
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
)

// Guest mistakes are logged at Warn, per kind of mistake a burst of
// warnBurst and then one per warnEvery; the next line that gets through
// says how many were suppressed.
const (
	warnBurst = 10
	warnEvery = time.Second
)

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
