package control

import (
	"encoding/json"
	"errors"
)

// RxFilterer is a Target with a receive filter (a NIC): what
// query-rx-filter reads. A Target need not be one.
type RxFilterer interface {
	// RxFilter returns the filter the guest's driver programmed now;
	// Name is filled by the caller.
	RxFilter() (RxFilterInfo, error)
}

// RxFilterInfo is one element of query-rx-filter, in the shape and names
// of QEMU's RxFilterInfo (qapi/net.json) for the fields a NIC here has.
type RxFilterInfo struct {
	Name             string   `json:"name"`
	Promiscuous      bool     `json:"promiscuous"`
	Multicast        string   `json:"multicast"` // "normal" (the table) or "all"
	Unicast          string   `json:"unicast"`   // "normal": main-mac only
	BroadcastAllowed bool     `json:"broadcast-allowed"`
	MainMAC          string   `json:"main-mac"`
	MulticastTable   []string `json:"multicast-table"`
}

// queryRxFilter answers query-rx-filter: the named device's filter, or
// every device's that has one (as QEMU, whose name is optional too).
func (s *Server) queryRxFilter(_ *client, args map[string]json.RawMessage) (any, error) {
	targets, err := s.targetsNamed(args)
	if err != nil {
		return nil, err
	}
	_, one := args["name"] // then a device without it is an error
	out := []RxFilterInfo{}
	for _, t := range targets {
		f, ok := t.(RxFilterer)
		var info RxFilterInfo
		err := ErrNotSupported
		if ok {
			info, err = f.RxFilter()
		}
		if errors.Is(err, ErrNotSupported) && !one {
			continue // a device without a filter, in the list of all
		}
		if err != nil {
			return nil, targetErr(t, err)
		}
		info.Name = t.Name()
		if info.MulticastTable == nil {
			info.MulticastTable = []string{}
		}
		out = append(out, info)
	}
	return out, nil
}
