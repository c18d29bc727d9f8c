package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/myriemu/myriemu/vm"
)

// Markers the scenario prints (besides /init's E2E-* lines); the live
// console hides them, the summary reads them.
const (
	markCmdStart = "MYRIEMU-RUN cmd-start"
	markCmdExit  = "MYRIEMU-RUN cmd-exit rc="
	markSetup    = "MYRIEMU-RUN setup-failed "
	markDmesg    = "MYRIEMU-DMESG "
	// setupFailedRC is the scenario's exit status when it never ran CMD.
	setupFailedRC = 125
	// shareTag is the 9p mount tag of --share.
	shareTag = "myriemu-share"
	// barrierTag is the 9p mount tag of the guests' barrier directory,
	// mounted at barrierDir: with several guests, CMD starts once every
	// guest is set up, and no guest powers off before every CMD ended
	// (a peer's ping must not meet a guest that has gone).
	barrierTag = "myriemu-barrier"
	barrierDir = "/run/myriemu"
)

// guestPlan is one guest: its cards on the server, its QEMU devices and
// the scenario its /init runs.
type guestPlan struct {
	Index int // 1-based
	Name  string
	Cards []cardPlan
}

// cardPlan is one card of one guest.
type cardPlan struct {
	Kind   string
	Device string // serve's device name, e.g. guest1.myri10ge0
	Socket string
	Opts   []string
	QdevID string // nic0, nic1, ...
	// Netdev is the k-th Myri-10G of the guest: interface ethK with
	// address 10.0.K.<guest>/24; -1 for cards without a netdev.
	Netdev int
}

// planGuests lays out every guest's cards; sockets go in sockDir.
func planGuests(cfg runConfig, sockDir string) []guestPlan {
	var out []guestPlan
	for i := 1; i <= cfg.Guests; i++ {
		g := guestPlan{Index: i, Name: "guest" + strconv.Itoa(i)}
		netdevs := 0
		for j, n := range cfg.NICs {
			c := cardPlan{
				Kind:   n.Kind,
				Device: fmt.Sprintf("%s.%s%d", g.Name, n.Kind, j),
				Socket: filepath.Join(sockDir, fmt.Sprintf("g%dn%d.sock", i, j)),
				Opts:   n.Opts,
				QdevID: fmt.Sprintf("nic%d", j),
				Netdev: -1,
			}
			if n.Kind == "myri10ge" {
				c.Netdev = netdevs
				netdevs++
				if !hasKey(n.Opts, "mac") {
					// Readable and unique on the wire: card j of guest i.
					c.Opts = append(append([]string(nil), n.Opts...), fmt.Sprintf("mac=00:60:dd:00:%02x:%02x", j, i))
				}
			}
			g.Cards = append(g.Cards, c)
		}
		out = append(out, g)
	}
	return out
}

func hasKey(opts []string, key string) bool {
	for _, kv := range opts {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// serveArgs is the command line of the one server all guests share.
func serveArgs(cfg runConfig, guests []guestPlan, pcap string) []string {
	args := []string{"serve", "--log-format", "json", "--log-level", cfg.LogLevel}
	for _, g := range guests {
		for _, c := range g.Cards {
			d := strings.Join(append([]string{c.Kind, "socket=" + c.Socket, "name=" + c.Device}, c.Opts...), ",")
			args = append(args, "--device", d)
		}
	}
	if pcap != "" {
		args = append(args, "--pcap", pcap)
	}
	if cfg.Faults != "" {
		args = append(args, "--faults", cfg.Faults)
	}
	if cfg.Control != "" {
		args = append(args, "--control", cfg.Control)
	}
	return args
}

// devices are the guest's vfio-user devices, with QEMU's default
// properties: a Myri-10G NIC's mmapped rings (pio=mmap, the default) make
// QEMU turn posted BAR writes off by itself, which the driver's 1 ms
// command budget needs on a loaded TCG host.
func (g guestPlan) devices() []vm.Device {
	var out []vm.Device
	for _, c := range g.Cards {
		out = append(out, vm.Device{ID: c.QdevID, Socket: c.Socket})
	}
	return out
}

// netdevs is the number of Myri-10G cards (interfaces) per guest.
func netdevs(cfg runConfig) int {
	n := 0
	for _, c := range cfg.NICs {
		if c.Kind == "myri10ge" {
			n++
		}
	}
	return n
}

// addr is the address of interface k of guest i.
func addr(k, i int) string { return fmt.Sprintf("10.0.%d.%d", k, i) }

// shareArgs are QEMU's arguments for a 9p export of dir with mount tag
// tag (commas in the path doubled, as QEMU's option parser wants).
// security_model=none: files are created with the QEMU process's owner and
// ownership changes the host refuses are not errors in the guest.
func shareArgs(id, dir, tag string) []string {
	return []string{
		"-fsdev", "local,id=" + id + ",security_model=none,path=" + strings.ReplaceAll(dir, ",", ",,"),
		"-device", "virtio-9p-pci,fsdev=" + id + ",mount_tag=" + tag,
	}
}

// barrier is the guest's barrier directory on the host: the guests
// touch NAME.<index> there and wait for GUEST_COUNT of them; run touches
// a guest's files itself when its QEMU exits, so that no guest waits for
// one that died.
func touchBarrier(dir string, index int) {
	for _, name := range []string{"ready", "done"} {
		if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s.%d", name, index))); err == nil {
			f.Close()
		}
	}
}

// scenario is the busybox sh script /init runs after loading the modules:
// mount the share, check the developer's modules loaded, configure every
// Myri-10G interface and wait for its carrier, export the environment,
// run CMD (or a shell), and on any exit print the kernel log for the
// summary. modules are the developer's module names, to check.
func scenario(cfg runConfig, g guestPlan, modules []string) string {
	barrier := cfg.Guests > 1
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# myriemu run: %s of %d", g.Name, cfg.Guests)
	// The kernel log goes to the console at the end, marked, whatever
	// happens; the live console hides it and the summary scans it.
	w(`trap 'dmesg | sed "s/^/%s/"' EXIT`, markDmesg)
	w(`setup_failed() { echo "%s$*"; exit %d; }`, markSetup, setupFailedRC)
	if barrier {
		w("mkdir -p %s && mount -t 9p -o trans=virtio,version=9p2000.L %s %s || setup_failed %s",
			barrierDir, barrierTag, barrierDir, shq("cannot mount the barrier directory (9p)"))
		// A guest that fails releases the others at once (run would when
		// its QEMU exits).
		w(`trap 'touch %[1]s/ready.%[2]d %[1]s/done.%[2]d; dmesg | sed "s/^/%[3]s/"' EXIT`, barrierDir, g.Index, markDmesg)
		w(`barrier() { touch %s/$1.%d; until [ "$(ls %s | grep -c "^$1\.")" -ge %d ]; do sleep 0.1; done; }`,
			barrierDir, g.Index, barrierDir, cfg.Guests)
	}
	w("ip link set lo up")
	if cfg.Share != "" {
		q := shq(cfg.Share)
		w("mkdir -p %s || setup_failed %s", q, shq("cannot create the mount point "+cfg.Share))
		w("mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 %s %s || setup_failed %s",
			shareTag, q, shq("cannot mount the share "+cfg.Share+" (9p); see the lines above"))
	}
	for _, m := range modules {
		w("[ -d /sys/module/%s ] || setup_failed %s", m, shq("module "+m+" did not load (its insmod line is above)"))
	}
	var addrs []string
	for i := 1; i <= cfg.Guests; i++ {
		if netdevs(cfg) > 0 {
			addrs = append(addrs, addr(0, i))
		}
	}
	env := []string{
		"GUEST_INDEX=" + strconv.Itoa(g.Index),
		"GUEST_COUNT=" + strconv.Itoa(cfg.Guests),
		"GUEST_NAME=" + g.Name,
		"GUEST_ADDRS=" + shq(strings.Join(addrs, " ")),
		"NIC_COUNT=" + strconv.Itoa(netdevs(cfg)),
		"HOME=/",
	}
	for _, c := range g.Cards {
		if c.Netdev < 0 {
			continue
		}
		ifc, a := "eth"+strconv.Itoa(c.Netdev), addr(c.Netdev, g.Index)
		w("ip addr add %s/24 dev %s && ip link set %s up || setup_failed %s", a, ifc, ifc,
			shq(fmt.Sprintf("cannot configure %s (%s, %s)", ifc, c.Device, c.Kind)))
		env = append(env, fmt.Sprintf("NIC%d_IF=%s", c.Netdev, ifc), fmt.Sprintf("NIC%d_ADDR=%s", c.Netdev, a))
		if c.Netdev == 0 {
			env = append(env, "GUEST_ADDR="+a)
		}
	}
	for _, c := range g.Cards {
		if c.Netdev < 0 {
			continue
		}
		ifc := "eth" + strconv.Itoa(c.Netdev)
		// The carrier comes with the driver's first interrupt: 30 s is
		// generous even on a loaded TCG host.
		w(`n=0; until [ "$(cat /sys/class/net/%s/carrier 2>/dev/null)" = 1 ]; do n=$((n+1)); [ $n -gt 300 ] && setup_failed %s; sleep 0.1; done`,
			ifc, shq(ifc+": no carrier within 30 s"))
	}
	w("export %s", strings.Join(env, " "))
	w("cd %s || setup_failed %s", shq(cfg.Cwd), shq("cannot cd to "+cfg.Cwd))
	if barrier {
		w("barrier ready")
	}
	w("echo %s", markCmdStart)
	if cfg.Shell && g.Index == 1 {
		// A controlling tty, so that Ctrl-C reaches the shell's children.
		w(`PS1="%s:\w# " setsid cttyhack sh -i`, g.Name)
	} else if cfg.Shell {
		w(": the first guest has the shell")
	} else {
		quoted := make([]string, len(cfg.Cmd))
		for i, a := range cfg.Cmd {
			quoted[i] = shq(a)
		}
		w("%s", strings.Join(quoted, " "))
	}
	w("rc=$?")
	w(`echo "%s$rc"`, markCmdExit)
	if barrier {
		w("barrier done")
	}
	w("exit $rc")
	return b.String()
}

// shq quotes s for sh: one argument whatever it holds.
func shq(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
