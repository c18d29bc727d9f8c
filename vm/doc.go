// Package vm runs QEMU guests with vfio-user devices and drives them over QMP.
package vm
