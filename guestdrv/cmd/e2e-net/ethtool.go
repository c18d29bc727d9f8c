package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// ethtool string sets (include/uapi/linux/ethtool.h: enum ethtool_stringset).
const (
	ssStats    = 1 // ETH_SS_STATS
	ssFeatures = 4 // ETH_SS_FEATURES

	gstringLen = 32 // ETH_GSTRING_LEN

	// ETHTOOL_SFEATURES answers with these bits in the ioctl's return value.
	sfeaturesUnsupported = 1 << 0 // ETHTOOL_F_UNSUPPORTED
)

// tsoFeatures are the features "ethtool -K IF tso on|off" toggles.
var tsoFeatures = []string{
	"tx-tcp-segmentation", "tx-tcp-ecn-segmentation",
	"tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation",
}

// dmaStats are the DMA test results the myri10ge driver exports (MB/s).
var dmaStats = []string{"read_dma_bw_MBs", "write_dma_bw_MBs", "read_write_dma_bw_MBs"}

// ifreqData is struct ifreq with ifr_data, the argument of SIOCETHTOOL.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool runs one SIOCETHTOOL request on ifname with buf as the ethtool
// structure (its first u32 is the command) and returns the ioctl's value.
func ethtool(ifname string, buf []byte) (int, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", ifname)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr := ifreqData{data: unsafe.Pointer(&buf[0])}
	copy(ifr.name[:], ifname)
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(buf)
	if errno != 0 {
		return 0, fmt.Errorf("SIOCETHTOOL cmd %#x on %s: %w", ne.Uint32(buf), ifname, errno)
	}
	return int(r), nil
}

var ne = binary.NativeEndian

// ethtoolCmd returns a zeroed buffer of size bytes whose first word is cmd.
func ethtoolCmd(cmd uint32, size int) []byte {
	b := make([]byte, max(size, 8))
	ne.PutUint32(b, cmd)
	return b
}

// drvinfo is ETHTOOL_GDRVINFO.
type drvinfo struct {
	Driver, Version, FW, Bus string
	NStats                   int
}

func getDrvinfo(ifname string) (drvinfo, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return drvinfo{}, err
	}
	defer unix.Close(fd)
	d, err := unix.IoctlGetEthtoolDrvinfo(fd, ifname)
	if err != nil {
		return drvinfo{}, fmt.Errorf("ETHTOOL_GDRVINFO on %s: %w", ifname, err)
	}
	return drvinfo{Driver: cstr(d.Driver[:]), Version: cstr(d.Version[:]), FW: cstr(d.Fw_version[:]),
		Bus: cstr(d.Bus_info[:]), NStats: int(d.N_stats)}, nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// ssetLen is ETHTOOL_GSSET_INFO for one string set: how many strings.
func ssetLen(ifname string, set uint) (int, error) {
	// struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }
	b := ethtoolCmd(unix.ETHTOOL_GSSET_INFO, 8+8+4)
	ne.PutUint64(b[8:], 1<<set)
	if _, err := ethtool(ifname, b); err != nil {
		return 0, err
	}
	if ne.Uint64(b[8:])&(1<<set) == 0 {
		return 0, fmt.Errorf("%s has no string set %d", ifname, set)
	}
	return int(ne.Uint32(b[16:])), nil
}

// getStrings is ETHTOOL_GSTRINGS.
func getStrings(ifname string, set uint, n int) ([]string, error) {
	// struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
	b := ethtoolCmd(unix.ETHTOOL_GSTRINGS, 12+n*gstringLen)
	ne.PutUint32(b[4:], uint32(set))
	ne.PutUint32(b[8:], uint32(n))
	if _, err := ethtool(ifname, b); err != nil {
		return nil, err
	}
	return parseStrings(b[12:], int(ne.Uint32(b[8:])))
}

// parseStrings splits an ethtool string block: n NUL-padded strings of
// ETH_GSTRING_LEN bytes.
func parseStrings(data []byte, n int) ([]string, error) {
	if n < 0 || len(data) < n*gstringLen {
		return nil, fmt.Errorf("string block of %d bytes cannot hold %d strings", len(data), n)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = cstr(data[i*gstringLen : (i+1)*gstringLen])
	}
	return out, nil
}

// getStats is ETH_SS_STATS names with ETHTOOL_GSTATS values.
func getStats(ifname string) ([]stat, error) {
	n, err := ssetLen(ifname, ssStats)
	if err != nil {
		return nil, err
	}
	names, err := getStrings(ifname, ssStats, n)
	if err != nil {
		return nil, err
	}
	// struct ethtool_stats { u32 cmd; u32 n_stats; u64 data[]; }
	b := ethtoolCmd(unix.ETHTOOL_GSTATS, 8+n*8)
	ne.PutUint32(b[4:], uint32(n))
	if _, err := ethtool(ifname, b); err != nil {
		return nil, err
	}
	return pairStats(names, b[8:], int(ne.Uint32(b[4:])))
}

// stat is one ethtool -S line.
type stat struct {
	Name  string
	Value uint64
}

// pairStats joins the stat names with the n u64 values in data.
func pairStats(names []string, data []byte, n int) ([]stat, error) {
	if n != len(names) || len(data) < n*8 {
		return nil, fmt.Errorf("%d stat names, %d values in %d bytes", len(names), n, len(data))
	}
	out := make([]stat, n)
	for i := range out {
		out[i] = stat{names[i], ne.Uint64(data[i*8:])}
	}
	return out, nil
}

// lookupStat returns the first stat called name (myri10ge repeats the
// per-slice names after the device's own).
func lookupStat(stats []stat, name string) (uint64, bool) {
	for _, s := range stats {
		if s.Name == name {
			return s.Value, true
		}
	}
	return 0, false
}

// feature is one netdev feature's state (ETHTOOL_GFEATURES).
type feature struct {
	Available, Requested, Active, NeverChanged bool
}

// getFeatures is ETH_SS_FEATURES names with ETHTOOL_GFEATURES bits.
func getFeatures(ifname string) ([]string, map[string]feature, error) {
	n, err := ssetLen(ifname, ssFeatures)
	if err != nil {
		return nil, nil, err
	}
	names, err := getStrings(ifname, ssFeatures, n)
	if err != nil {
		return nil, nil, err
	}
	blocks := (n + 31) / 32
	// struct ethtool_gfeatures { u32 cmd; u32 size; struct { u32 available,
	// requested, active, never_changed; } features[]; }
	b := ethtoolCmd(unix.ETHTOOL_GFEATURES, 8+blocks*16)
	ne.PutUint32(b[4:], uint32(blocks))
	if _, err := ethtool(ifname, b); err != nil {
		return nil, nil, err
	}
	f, err := parseFeatures(names, b[8:])
	return names, f, err
}

// parseFeatures decodes GFEATURES blocks for the named feature bits.
func parseFeatures(names []string, blocks []byte) (map[string]feature, error) {
	if len(blocks) < (len(names)+31)/32*16 {
		return nil, fmt.Errorf("%d feature names, %d bytes of blocks", len(names), len(blocks))
	}
	out := make(map[string]feature, len(names))
	for i, name := range names {
		if name == "" {
			continue
		}
		blk, bit := blocks[i/32*16:], uint32(1)<<(i%32)
		out[name] = feature{
			Available:    ne.Uint32(blk[0:])&bit != 0,
			Requested:    ne.Uint32(blk[4:])&bit != 0,
			Active:       ne.Uint32(blk[8:])&bit != 0,
			NeverChanged: ne.Uint32(blk[12:])&bit != 0,
		}
	}
	return out, nil
}

// setFeatures is ETHTOOL_SFEATURES: request each named feature on or off.
// It fails for a name the kernel does not list or cannot change.
func setFeatures(ifname string, want map[string]bool) error {
	names, _, err := getFeatures(ifname)
	if err != nil {
		return err
	}
	b, err := sfeaturesRequest(names, want)
	if err != nil {
		return err
	}
	r, err := ethtool(ifname, b)
	if err != nil {
		return err
	}
	if r&sfeaturesUnsupported != 0 {
		return fmt.Errorf("ETHTOOL_SFEATURES on %s: some of %v cannot be changed", ifname, slices.Sorted(maps.Keys(want)))
	}
	return nil
}

// sfeaturesRequest encodes struct ethtool_sfeatures { u32 cmd; u32 size;
// struct { u32 valid; u32 requested; } features[]; }.
func sfeaturesRequest(names []string, want map[string]bool) ([]byte, error) {
	blocks := (len(names) + 31) / 32
	b := ethtoolCmd(unix.ETHTOOL_SFEATURES, 8+blocks*8)
	ne.PutUint32(b[4:], uint32(blocks))
	for name, on := range want {
		i := slices.Index(names, name)
		if i < 0 {
			return nil, fmt.Errorf("no feature %q", name)
		}
		blk, bit := b[8+i/32*8:], uint32(1)<<(i%32)
		ne.PutUint32(blk[0:], ne.Uint32(blk[0:])|bit)
		if on {
			ne.PutUint32(blk[4:], ne.Uint32(blk[4:])|bit)
		}
	}
	return b, nil
}

// cmdEthtool:
//
//	ethtool drvinfo IF     ethtool.drvinfo pass (driver, version, fw, bus, n_stats)
//	ethtool stats IF       ethtool.stats info (every device stat before the slices)
//	ethtool stats IF -dma  also ethtool.dma: pass if the three DMA test bandwidths are > 0
//	ethtool features IF    ethtool.features info (the active ones)
//	ethtool set IF tso on|off  ethtool.tso pass if the TSO features end up as asked
func cmdEthtool(p *result.Printer, args []string) error {
	if len(args) < 2 {
		return usageErr("ethtool drvinfo|stats|features|set IF ...")
	}
	op, ifname, rest := args[0], args[1], args[2:]
	switch op {
	case "drvinfo":
		d, err := getDrvinfo(ifname)
		if err != nil {
			p.Failf("ethtool.drvinfo", "%v", err)
			return nil
		}
		p.Passf("ethtool.drvinfo", "driver=%s version=%s fw=%q bus=%s n_stats=%d", d.Driver, d.Version, d.FW, d.Bus, d.NStats)
	case "stats":
		dma := len(rest) == 1 && rest[0] == "-dma"
		if len(rest) > 0 && !dma {
			return usageErr("ethtool stats IF [-dma]")
		}
		stats, err := getStats(ifname)
		if err != nil {
			p.Failf("ethtool.stats", "%v", err)
			return nil
		}
		p.Infof("ethtool.stats", "%s", formatStats(stats))
		if dma {
			checkDMA(p, stats)
		}
	case "features":
		names, f, err := getFeatures(ifname)
		if err != nil {
			p.Failf("ethtool.features", "%v", err)
			return nil
		}
		var on []string
		for _, n := range names {
			if f[n].Active {
				on = append(on, n)
			}
		}
		p.Infof("ethtool.features", "active=%s", strings.Join(on, ","))
	case "set":
		if len(rest) != 2 || rest[0] != "tso" || (rest[1] != "on" && rest[1] != "off") {
			return usageErr("ethtool set IF tso on|off")
		}
		setTSO(p, ifname, rest[1] == "on")
	default:
		return usageErr("ethtool: unknown operation %q", op)
	}
	return nil
}

// formatStats renders the device's own statistics (up to the first
// per-slice separator) as name=value pairs.
func formatStats(stats []stat) string {
	var b strings.Builder
	for _, s := range stats {
		if strings.HasPrefix(s.Name, "---") {
			break
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", s.Name, s.Value)
	}
	return b.String()
}

// checkDMA prints ethtool.dma: the driver's DMA test (run at every reset)
// only logs failures; its bandwidths are these statistics.
func checkDMA(p *result.Printer, stats []stat) {
	var parts []string
	var missing []string
	for _, name := range dmaStats {
		v, ok := lookupStat(stats, name)
		if !ok || v == 0 {
			missing = append(missing, fmt.Sprintf("%s=%d (present=%v)", name, v, ok))
		}
		parts = append(parts, fmt.Sprintf("%s=%d", name, v))
	}
	if len(missing) > 0 {
		p.Failf("ethtool.dma", "DMA test result missing or zero: %s", strings.Join(missing, " "))
		return
	}
	p.Passf("ethtool.dma", "%s", strings.Join(parts, " "))
}

// setTSO toggles every TSO feature the interface can change, as ethtool
// -K tso does, and checks that tx-tcp-segmentation ends up as asked.
func setTSO(p *result.Printer, ifname string, on bool) {
	names, f, err := getFeatures(ifname)
	if err != nil {
		p.Failf("ethtool.tso", "%v", err)
		return
	}
	want := map[string]bool{}
	for _, name := range tsoFeatures {
		if slices.Contains(names, name) && f[name].Available {
			want[name] = on
		}
	}
	if len(want) == 0 {
		p.Failf("ethtool.tso", "%s can change none of %v", ifname, tsoFeatures)
		return
	}
	if err := setFeatures(ifname, want); err != nil {
		p.Failf("ethtool.tso", "%v", err)
		return
	}
	if _, f, err = getFeatures(ifname); err != nil {
		p.Failf("ethtool.tso", "%v", err)
		return
	}
	state := map[bool]string{true: "on", false: "off"}
	got := f["tx-tcp-segmentation"].Active
	if got != on {
		p.Failf("ethtool.tso", "asked tso %s, tx-tcp-segmentation is %s", state[on], state[got])
		return
	}
	p.Passf("ethtool.tso", "tso=%s tx-tcp-segmentation=%s changed=%s", state[on], state[got],
		strings.Join(slices.Sorted(maps.Keys(want)), ","))
}
