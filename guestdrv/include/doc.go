// Package include holds the C headers shared by the device model and the
// guest modules (myrimx_abi.h, myrimx_ioctl.h) and a test that the copies
// a module directory carries (kbuild sees only that directory) stay equal
// to them.
package include
