module github.com/myriemu/myriemu

go 1.26.0

// Dependencies, and why each is here:
//   golang.org/x/sys            raw AF_UNIX sockets, SCM_RIGHTS, mmap, memfd, eventfd
//   github.com/sirupsen/logrus  structured logging with component/device fields
//   github.com/digitalocean/go-qemu  QMP client for driving QEMU (package vm)
//   github.com/gopacket/gopacket pcap writing of the emulated wire (package fabric)
//   github.com/google/go-cmp    "-want +got" diffs in tests

require (
	github.com/digitalocean/go-qemu v0.0.0-20250212194115-ee9b0668d242
	github.com/google/go-cmp v0.7.0
	github.com/gopacket/gopacket v1.7.7
	github.com/sirupsen/logrus v1.10.2
	golang.org/x/sys v0.49.0
)

require (
	github.com/digitalocean/go-libvirt v0.0.0-20220804181439-8648fbde413e // indirect
	golang.org/x/net v0.55.0 // indirect
)
