// Package myrimx is myriemu's zero-copy personality of the card: an MX-like
// NIC with per-endpoint command rings and event queues in guest memory, a
// registration table the device owns, fenced invalidation, and send/receive
// between registered guest pages of any myrimx NIC in the process.
//
// Section numbers (§) refer to shared/reference/zero-copy-design.md; the
// ABI is guestdrv/include/myrimx_abi.h; README.md maps every register,
// command, status and audit check to its handler.
package myrimx
