// Package testdev is a small generic PCI function (1234:7e57) that uses
// every door a device model has (DMA, interrupts, the write-combined window)
// and lets users check a QEMU setup; its register map is in package abi (abi/abi.go) and
// README.md.
package testdev
