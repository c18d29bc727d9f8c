package main

import (
	"github.com/myriemu/myriemu/control"
	"github.com/myriemu/myriemu/device/myri10ge"
)

// RxFilter serves query-rx-filter (as control.RxFilterer): a Myri-10G
// NIC's receive filter as its driver programmed it.
func (t *target) RxFilter() (control.RxFilterInfo, error) {
	n, ok := t.dev.(interface{ RxFilter() myri10ge.RxFilter })
	if !ok {
		return control.RxFilterInfo{}, control.ErrNotSupported
	}
	f := n.RxFilter()
	info := control.RxFilterInfo{Promiscuous: f.Promisc, Multicast: "normal", Unicast: "normal",
		BroadcastAllowed: true, MainMAC: f.MAC.String(), MulticastTable: []string{}}
	if f.AllMulti {
		info.Multicast = "all"
	}
	for _, a := range f.Multicast {
		info.MulticastTable = append(info.MulticastTable, a.String())
	}
	return info, nil
}
