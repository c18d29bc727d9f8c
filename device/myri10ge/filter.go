package myri10ge

import (
	"bytes"
	"net"
	"slices"
)

// RxFilter is the receive filter the driver has programmed, as the
// control socket's query-rx-filter shows it: what SET_MAC_ADDRESS,
// ENABLE/DISABLE_PROMISC, ENABLE/DISABLE_ALLMULTI and JOIN/LEAVE
// _MULTICAST_GROUP left behind (recv.go applies it to every frame).
type RxFilter struct {
	MAC       net.HardwareAddr
	Promisc   bool
	AllMulti  bool               // every multicast frame passes (the state after CMD_RESET)
	Multicast []net.HardwareAddr // joined groups, in byte order
}

// RxFilter returns a copy of the receive filter now.
func (n *NIC) RxFilter() RxFilter {
	n.mu.Lock()
	defer n.mu.Unlock()
	f := RxFilter{MAC: bytes.Clone(n.fw.mac[:]), Promisc: n.fw.promisc, AllMulti: n.fw.allMulti}
	for a := range n.fw.mcast {
		f.Multicast = append(f.Multicast, bytes.Clone(a[:]))
	}
	slices.SortFunc(f.Multicast, func(a, b net.HardwareAddr) int { return bytes.Compare(a, b) })
	return f
}
