package link

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/leaktest"
	"golang.org/x/sys/unix"
)

// inNewNetns runs fn on an OS thread moved into a network namespace of its
// own, so that the interfaces and sockets fn creates live there and touch
// nothing of the machine's. The thread is never given back to the runtime:
// it ends with the goroutine. Sockets and files made there keep their
// namespace when used from other threads.
func inNewNetns(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("TAP tests need root (CAP_NET_ADMIN and CAP_SYS_ADMIN for a network namespace of their own); run them as root")
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
}

// setAddr gives interface name the IPv4 address addr/24 (in the calling
// thread's network namespace).
func setAddr(name string, addr net.IP) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, _ := unix.NewIfreq(name)
	if err := ifr.SetInet4Addr(addr.To4()); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, ifr); err != nil {
		return err
	}
	ifr, _ = unix.NewIfreq(name)
	ifr.SetInet4Addr(net.IPv4(255, 255, 255, 0).To4())
	return unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, ifr)
}

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestTAPToHostStack puts a TAP port in a network namespace made for the
// test, gives the interface an address, and has the kernel's own stack
// talk to a node on the switch: its ARP request and UDP datagram arrive on
// the switch, and a UDP datagram from the switch reaches a socket in the
// namespace. The interface was created with the link's MTU.
func TestTAPToHostStack(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	hostIP, nodeIP := net.IPv4(10, 77, 0, 1), net.IPv4(10, 77, 0, 2)
	var (
		l    *Link
		sock net.PacketConn
		mtu  int
		err  error
	)
	inNewNetns(t, func() {
		var cfg Config
		if cfg, err = ParseSpec("tap=mtap0,name=tap0"); err != nil {
			return
		}
		if l, err = Open(sw, cfg, quietLog()); err != nil {
			return
		}
		if err = setAddr("mtap0", hostIP); err != nil {
			return
		}
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName("mtap0"); err != nil {
			return
		}
		mtu = ifi.MTU
		sock, err = net.ListenPacket("udp4", "10.77.0.1:7777")
	})
	if err != nil {
		if l != nil {
			l.Close()
		}
		t.Fatal(err)
	}
	defer l.Close()
	defer sock.Close()
	if mtu != DefaultMTU {
		t.Errorf("TAP MTU %d, want %d", mtu, DefaultMTU)
	}
	l.Start()
	n := newNode(t, sw, "n", 2)
	nodeMAC := net.HardwareAddr(n.mac[:])

	// The kernel resolves the node's address: its ARP request comes out of
	// the TAP, whatever IPv6 chatter the new interface sends first.
	if _, err := sock.WriteTo([]byte("from the host"), &net.UDPAddr{IP: nodeIP, Port: 9}); err != nil {
		t.Fatal(err)
	}
	var hostMAC net.HardwareAddr
	for hostMAC == nil {
		p := gopacket.NewPacket(n.next(t), layers.LayerTypeEthernet, gopacket.Default)
		if arp, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok && arp.Operation == layers.ARPRequest &&
			net.IP(arp.DstProtAddress).Equal(nodeIP) {
			hostMAC = net.HardwareAddr(arp.SourceHwAddress)
		}
	}
	eth := &layers.Ethernet{SrcMAC: nodeMAC, DstMAC: hostMAC, EthernetType: layers.EthernetTypeARP}
	n.port.Send([][]byte{serialize(t, eth, &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPReply, SourceHwAddress: nodeMAC, SourceProtAddress: nodeIP.To4(),
		DstHwAddress: hostMAC, DstProtAddress: hostIP.To4(),
	})})
	for {
		p := gopacket.NewPacket(n.next(t), layers.LayerTypeEthernet, gopacket.Default)
		if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && u.DstPort == 9 {
			if !bytes.Equal(u.Payload, []byte("from the host")) {
				t.Fatalf("UDP payload %q", u.Payload)
			}
			break
		}
	}

	// And back: a datagram from the node reaches the host's socket.
	eth.EthernetType = layers.EthernetTypeIPv4
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: nodeIP, DstIP: hostIP}
	udp := &layers.UDP{SrcPort: 9, DstPort: 7777}
	udp.SetNetworkLayerForChecksum(ip)
	n.port.Send([][]byte{serialize(t, eth, ip, udp, gopacket.Payload("from the switch"))})
	sock.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 100)
	k, from, err := sock.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:k]) != "from the switch" || !from.(*net.UDPAddr).IP.Equal(nodeIP) {
		t.Errorf("host got %q from %v", buf[:k], from)
	}
	eventually(t, "counters", func() bool { // Out is counted after the write
		st := l.Stats()
		return st.InFrames >= 2 && st.OutFrames >= 2 && st.Carrier
	})
}

// TestTAPMalformed is the malformed-input suite of the TAP port: the
// kernel never hands a TAP reader a runt, but it does pass on frames up to
// the interface's MTU, which may be raised behind the link's back; those
// beyond the wire's largest frame are dropped and counted, and a frame
// from the switch beyond the link's MTU is never written.
func TestTAPMalformed(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	var (
		l    *Link
		sock net.PacketConn
		err  error
	)
	inNewNetns(t, func() {
		cfg := Config{Kind: TAP, Name: "tap0", Addr: "mtap1", MTU: 1500}
		if l, err = Open(sw, cfg, quietLog()); err != nil {
			return
		}
		if err = setAddr("mtap1", net.IPv4(10, 78, 0, 1)); err != nil {
			return
		}
		if err = setLinkMTUUp("mtap1", 16000); err != nil { // raised behind the link's back
			return
		}
		sock, err = net.ListenPacket("udp4", "10.78.0.1:0")
	})
	if err != nil {
		if l != nil {
			l.Close()
		}
		t.Fatal(err)
	}
	defer l.Close()
	defer sock.Close()
	l.Start()
	n := newNode(t, sw, "n", 2)
	// A broadcast UDP datagram of 12000 bytes leaves unfragmented as one
	// 12042-byte frame (IP_PMTUDISC_DO keeps the kernel from fragmenting).
	rc, _ := sock.(*net.UDPConn).SyscallConn()
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	})
	if _, err := sock.WriteTo(make([]byte, 12000), &net.UDPAddr{IP: net.IPv4(10, 78, 0, 255), Port: 9}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "oversized frame counted", func() bool { return l.Stats().InOversize == 1 })
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	n.port.Send([][]byte{n.frameTo(bcast, 1519, 1)})
	eventually(t, "too-big frame counted", func() bool { return l.Stats().OutTooBig == 1 })
}
