//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// resetDone reports whether the NIC ran the driver's reset sequence again
// (mailbox commands) and sent frames since before.
func resetDone(before, now map[string]uint64) bool {
	return now["commands"] >= before["commands"]+5 && now["tx_frames"] > before["tx_frames"]
}

// TestDeviceDisconnect is issue #10, acceptance 3, "device-reset during
// traffic" and "device-disconnect during traffic": a guest sends (ARP for
// an absent peer, 10 a second); the control socket resets its NIC (the
// driver's watchdog sees bus mastering off: "NIC rebooted", and recovers:
// the NIC runs its mailbox commands again and sends again), then drops
// its NIC's vfio-user client. The test
// records what QEMU and the guest do about it (QEMU's stderr, the guest's
// kernel log), then boots a second guest on the same socket, which must
// find a working NIC: the server freed the first client and serves the
// next.
func TestDeviceDisconnect(t *testing.T) {
	h := harness.New(t, env)
	srv, nics, path := controlServer(h, 1)
	first := myripair.NewScript(ipA).Raw(`ping -c 900 -i 0.1 -W 1 10.0.0.9 >/dev/null 2>&1
echo "after the disconnect:"
dmesg | grep -i 'myri10ge\|vfio' | tail -20`)
	mon, err := monitor(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	var problems []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(h.Context(), 6*time.Minute)
		defer cancel()
		if err := waitConnected(ctx, mon, nics); err != nil {
			problems = append(problems, err.Error())
			return
		}
		time.Sleep(5 * time.Second)
		before, err := nicCounters(mon, "myri0")
		if err != nil {
			problems = append(problems, err.Error())
			return
		}
		if _, err := mon.Run([]byte(`{"execute":"device-reset","arguments":{"name":"myri0"}}`)); err != nil {
			problems = append(problems, "device-reset: "+err.Error())
			return
		}
		for {
			c, err := nicCounters(mon, "myri0")
			if err != nil {
				problems = append(problems, err.Error())
				return
			}
			if resetDone(before, c) {
				break
			}
			select {
			case <-ctx.Done():
				problems = append(problems, fmt.Sprintf("no recovery from device-reset: %v", c))
				return
			case <-time.After(time.Second):
			}
		}
		if _, err := mon.Run([]byte(`{"execute":"device-disconnect","arguments":{"name":"myri0"}}`)); err != nil {
			problems = append(problems, "device-disconnect: "+err.Error())
			return
		}
		for {
			out, err := mon.Run([]byte(`{"execute":"query-devices"}`))
			if err != nil {
				problems = append(problems, err.Error())
				return
			}
			var r struct{ Return []map[string]any }
			json.Unmarshal(out, &r)
			if len(r.Return) == 1 && r.Return[0]["client-connected"] == false {
				return
			}
			select {
			case <-ctx.Done():
				problems = append(problems, "the client still shows as connected: "+string(out))
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	g1 := myripair.GuestSpec{Name: "first", NIC: nics[0], Script: first, Timeout: 4 * time.Minute}.Guest()
	r1 := h.Env.RunGuest(h.Context(), g1)
	<-done
	for _, p := range problems {
		h.Errorf("%s", p)
	}
	h.Logf("first guest after device-disconnect: err=%v, QEMU ran %.1f s, timed out %v", r1.Err, r1.Elapsed.Seconds(), r1.TimedOut)
	h.Logf("QEMU's stderr:\n%s", strings.TrimSpace(r1.QEMUStderr))
	if i := strings.Index(r1.ConsoleText, "after the disconnect:"); i >= 0 {
		h.Logf("guest's view:\n%s", r1.ConsoleText[i:min(len(r1.ConsoleText), i+3000)])
	}
	// The driver's own reaction: its watchdog finds TX stuck, reads the
	// config space of a function that answers nothing (vfio-user-pci
	// returns all ones once its server has gone) and gives up.
	if !strings.Contains(r1.ConsoleText, "NIC rebooted") {
		h.Errorf("the first guest's driver never said \"NIC rebooted\" after device-reset")
	}
	if !strings.Contains(r1.ConsoleText, "device disappeared!") {
		h.Errorf("the first guest's driver never said \"device disappeared!\"")
	}
	if r1.Err != nil || r1.TimedOut {
		h.Errorf("the first guest did not finish cleanly after the disconnect: %v", r1.Err)
	}
	// The next QEMU on the same socket gets a working NIC.
	second := myripair.NewScript(ipA).Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))
	h.MustPass(myripair.GuestSpec{Name: "second", NIC: nics[0], Script: second, Timeout: 4 * time.Minute, Require: driverResults}.Guest())
	mon.Disconnect()
	myripair.WaitDetached(srv, 2, 10*time.Second)
	if err := srv.Stop(); err != nil {
		h.Errorf("myriemu did not stop cleanly: %v", err)
	}
	for _, l := range myripair.Problems(srv.Log()) {
		if !strings.Contains(l, "device-disconnect") {
			h.Errorf("server log: %s", l)
		}
	}
	if n := len(myripair.NICCounters(srv.Log(), "myri0")); n != 2 {
		h.Errorf("the NIC detached %d times, want 2 (one per QEMU)", n)
	}
}
