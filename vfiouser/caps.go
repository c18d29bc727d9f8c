package vfiouser

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Capability limits (notes 2.3). QEMU rejects a server that advertises
// more than these; the server holds its clients to the same bounds.
const (
	DefaultMaxDataXfer = 1 << 20  // spec default for max_data_xfer_size
	MinMaxDataXfer     = 4096     // QEMU's first config read is 4096 bytes
	MaxMaxDataXfer     = 64 << 20 // QEMU rejects more
	maxMsgFDs          = 16       // QEMU rejects more
	defaultPeerMsgFDs  = 1        // spec default when max_msg_fds is absent
	pageSize           = 4096
)

// peerCaps is what the client said about itself in VERSION.
type peerCaps struct {
	MaxMsgFDs     int // fds the client accepts in one message from us
	MaxDataXfer   int // largest count the client accepts in DMA_READ/WRITE
	WriteMultiple bool
}

// parseCapabilities parses the client's capability JSON (the VERSION
// payload text without its NUL). Empty text means spec defaults. Unknown
// keys are ignored; known keys with the wrong type or out of range are an
// error wrapping EINVAL.
func parseCapabilities(text []byte) (peerCaps, error) {
	caps := peerCaps{MaxMsgFDs: defaultPeerMsgFDs, MaxDataXfer: DefaultMaxDataXfer}
	if len(bytes.TrimSpace(text)) == 0 {
		return caps, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(text, &top); err != nil || top == nil {
		return caps, fmt.Errorf("vfiouser: version capabilities: not a JSON object: %w", unix.EINVAL)
	}
	raw, ok := top["capabilities"]
	if !ok {
		return caps, nil
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(raw, &c); err != nil || c == nil {
		return caps, fmt.Errorf("vfiouser: version capabilities: \"capabilities\" is not an object: %w", unix.EINVAL)
	}
	if v, ok := c["max_msg_fds"]; ok {
		n, err := jsonUint(v, maxMsgFDs)
		if err != nil {
			return caps, fmt.Errorf("vfiouser: version capabilities: max_msg_fds: %w", err)
		}
		caps.MaxMsgFDs = int(n)
	}
	if v, ok := c["max_data_xfer_size"]; ok {
		n, err := jsonUint(v, MaxMaxDataXfer)
		if err != nil || n == 0 {
			return caps, fmt.Errorf("vfiouser: version capabilities: max_data_xfer_size: %w", unix.EINVAL)
		}
		caps.MaxDataXfer = int(n)
	}
	if v, ok := c["write_multiple"]; ok {
		if err := json.Unmarshal(v, &caps.WriteMultiple); err != nil {
			return caps, fmt.Errorf("vfiouser: version capabilities: write_multiple: %w", unix.EINVAL)
		}
	}
	return caps, nil
}

// jsonUint decodes a non-negative JSON integer no larger than max.
func jsonUint(raw json.RawMessage, max uint64) (uint64, error) {
	var num json.Number
	if err := json.Unmarshal(raw, &num); err != nil {
		return 0, unix.EINVAL
	}
	n, err := strconv.ParseUint(num.String(), 10, 64)
	if err != nil || n > max {
		return 0, unix.EINVAL
	}
	return n, nil
}

// versionReplies are the server's capability texts, NUL-terminated, from
// the fullest to the smallest. The VERSION reply uses the fullest one that
// fits in the client's request size (QEMU's reply buffer is its request,
// notes 2.3): the optional keys go first.
func versionReplies(maxDataXfer, maxDMAMaps int) [][]byte {
	x := strconv.Itoa(maxDataXfer)
	texts := []string{
		`{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":` + x + `,"pgsizes":4096,"max_dma_maps":` + strconv.Itoa(maxDMAMaps) + `,"write_multiple":true}}`,
		`{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":` + x + `,"write_multiple":true}}`,
		`{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":` + x + `}}`,
	}
	out := make([][]byte, len(texts))
	for i, t := range texts {
		out[i] = append([]byte(t), 0)
	}
	return out
}

// pickVersionReply returns the fullest text whose reply message fits in
// limit bytes (header, major, minor, text and NUL). If none fits the
// smallest is returned: a client that sends a shorter VERSION than that is
// not QEMU, and a reply without JSON would be worse (notes 2.3).
func pickVersionReply(texts [][]byte, limit int) []byte {
	for _, t := range texts {
		if HeaderSize+versionSize+len(t) <= limit {
			return t
		}
	}
	return texts[len(texts)-1]
}
