// Package guestdrv builds what runs inside the end-to-end test guests: the
// initramfs image with its /init, static Go guest programs and guest kernel
// modules.
package guestdrv
