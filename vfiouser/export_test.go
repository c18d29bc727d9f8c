package vfiouser

import "time"

// Recvmsg exports recvmsg for the benchmarks' raw baseline, so both sides
// of a comparison use the same receive path.
var Recvmsg = recvmsg

// SetDMATimeout shortens the message-DMA reply timeout for a test.
func SetDMATimeout(s *Server, d time.Duration) { s.dmaTimeout = d }
