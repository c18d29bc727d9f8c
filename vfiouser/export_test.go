package vfiouser

// Recvmsg exports recvmsg for the benchmarks' raw baseline, so both sides
// of a comparison use the same receive path.
var Recvmsg = recvmsg
