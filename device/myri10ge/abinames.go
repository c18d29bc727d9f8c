package myri10ge

import "github.com/myriemu/myriemu/device/myri10ge/abi"

// The names pio.go's ring poller uses for the ring ABI. pio.go is being
// rewritten on another branch; once that lands, its uses become abi.X and
// this file goes.
const (
	bar0Size       = abi.BAR0Size
	sendDescSize   = abi.SendDescSize
	sendOffPad     = abi.SendOffPad
	recvDescSize   = abi.RecvDescSize
	recvOffAddrLow = abi.RecvOffAddrLow
	recvGroup      = abi.RecvGroup
	recvInvalidLow = abi.RecvInvalidLow
)
