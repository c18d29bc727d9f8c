package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/sirupsen/logrus"
)

func TestParseServe(t *testing.T) {
	kinds := deviceKinds()
	td := func(name, socket string) deviceConfig {
		return deviceConfig{Kind: "testdev", Name: name, Socket: socket}
	}
	tests := []struct {
		name string
		args string
		want serveConfig
		// errContains, if set, is part of the usage error wanted.
		errContains string
	}{
		{name: "one pair", args: "--socket /run/a.sock --device testdev",
			want: serveConfig{Devices: []deviceConfig{td("testdev0", "/run/a.sock")}, LogLevel: logrus.InfoLevel, LogFormat: "text"}},
		{name: "single dash, device first", args: "-device testdev -socket /a",
			want: serveConfig{Devices: []deviceConfig{td("testdev0", "/a")}, LogLevel: logrus.InfoLevel, LogFormat: "text"}},
		{name: "two pairs in order", args: "--socket /a --device testdev --socket /b --device testdev --log-level debug --log-format json",
			want: serveConfig{Devices: []deviceConfig{td("testdev0", "/a"), td("testdev1", "/b")}, LogLevel: logrus.DebugLevel, LogFormat: "json"}},
		{name: "inline socket and name", args: "--device testdev,socket=/x,name=td9 --device testdev,name=foo --socket /y",
			want: serveConfig{Devices: []deviceConfig{td("td9", "/x"), td("foo", "/y")}, LogLevel: logrus.InfoLevel, LogFormat: "text"}},
		{name: "mixed: inline socket takes no --socket", args: "--socket /a --device testdev,socket=/x --device testdev",
			want: serveConfig{Devices: []deviceConfig{td("testdev0", "/x"), td("testdev1", "/a")}, LogLevel: logrus.InfoLevel, LogFormat: "text"}},
		{name: "default name skips a taken one", args: "--device testdev,socket=/x,name=testdev0 --device testdev,socket=/y",
			want: serveConfig{Devices: []deviceConfig{td("testdev0", "/x"), td("testdev1", "/y")}, LogLevel: logrus.InfoLevel, LogFormat: "text"}},
		{name: "myri10ge keys and pcap", args: "--device myri10ge,socket=/m,mac=00:60:dd:00:00:07,slices=4 --pcap /tmp/w.pcap",
			want: serveConfig{Devices: []deviceConfig{{Kind: "myri10ge", Name: "myri10ge0", Socket: "/m",
				Opts: map[string]string{"mac": "00:60:dd:00:00:07", "slices": "4"}}}, LogLevel: logrus.InfoLevel, LogFormat: "text", Pcap: "/tmp/w.pcap"}},
		{name: "fd pairs like socket, in order", args: "--socket /a --fd 3 --device testdev --device testdev --device testdev,fd=4",
			want: serveConfig{Devices: []deviceConfig{td("testdev0", "/a"), {Kind: "testdev", Name: "testdev1", FD: 3},
				{Kind: "testdev", Name: "testdev2", FD: 4}}, LogLevel: logrus.InfoLevel, LogFormat: "text"}},
		{name: "socket mode and group", args: "--device testdev,socket=/x --socket-mode 660 --socket-group 65534",
			want: serveConfig{Devices: []deviceConfig{td("testdev0", "/x")}, LogLevel: logrus.InfoLevel, LogFormat: "text",
				Perm: unixsock.Perm{Mode: 0o660, GID: 65534, SetGID: true}}},
		{name: "warn level", args: "--log-level warn --device testdev,socket=/x",
			want: serveConfig{Devices: []deviceConfig{td("testdev0", "/x")}, LogLevel: logrus.WarnLevel, LogFormat: "text"}},

		{name: "nothing", args: "", errContains: "no --device"},
		{name: "slices=0", args: "--device myri10ge,socket=/a,slices=0", errContains: "slices=0: want a number 1..32"},
		{name: "mac=garbage", args: "--device myri10ge,socket=/a,mac=garbage", errContains: "mac=garbage: not a MAC address"},
		{name: "multicast mac", args: "--device myri10ge,socket=/a,mac=01:00:5e:00:00:01", errContains: "unicast"},
		{name: "serial too big", args: "--device myri10ge,socket=/a,serial=4294967296", errContains: "serial=4294967296"},
		{name: "socket and fd", args: "--device testdev,socket=/a,fd=3", errContains: "socket= and fd= together"},
		{name: "fd 0", args: "--device testdev,fd=0", errContains: "want a descriptor number >= 3"},
		{name: "same fd", args: "--device testdev,fd=3 --device testdev,fd=3", errContains: `socket "fd:3" used by two`},
		{name: "extra fd", args: "--fd 3 --fd 4 --device testdev", errContains: "--fd 4 has no --device"},
		{name: "bad mode", args: "--device testdev,socket=/a --socket-mode rw", errContains: "--socket-mode"},
		{name: "mode with setuid", args: "--device testdev,socket=/a --socket-mode 4600", errContains: "--socket-mode"},
		{name: "socket without device", args: "--socket /a", errContains: "no --device"},
		{name: "extra socket", args: "--socket /a --socket /b --device testdev", errContains: `--socket "/b" has no --device`},
		{name: "device without socket", args: "--socket /a --device testdev --device testdev", errContains: "has no socket"},
		{name: "key of another kind", args: "--device testdev,socket=/a,mac=00:60:dd:00:00:01", errContains: `unknown key "mac" (known: socket, fd, name)`},
		{name: "unknown myri10ge key", args: "--device myri10ge,socket=/a,speed=40g", errContains: `unknown key "speed" (known: socket, fd, name, mac, serial, slices, pio)`},
		{name: "unknown kind", args: "--socket /a --device myri99", errContains: `unknown kind "myri99" (known: myri10ge, myrimx, testdev)`},
		{name: "unknown key", args: "--device testdev,sock=/a", errContains: `unknown key "sock"`},
		{name: "key without value", args: "--device testdev,socket=", errContains: "not key=value"},
		{name: "bare word", args: "--device testdev,/a", errContains: "not key=value"},
		{name: "key twice", args: "--device testdev,socket=/a,socket=/b", errContains: "socket given twice"},
		{name: "name with space", args: "--device testdev,socket=/a,name=a=b", errContains: "has spaces, quotes or '='"},
		{name: "same name", args: "--device testdev,socket=/a,name=x --device testdev,socket=/b,name=x", errContains: `name "x" used twice`},
		{name: "same socket", args: "--device testdev,socket=/a --device testdev,socket=/a", errContains: `socket "/a" used by two`},
		{name: "empty socket", args: "--socket= --device testdev", errContains: "empty path"},
		{name: "bad level", args: "--log-level loud --device testdev,socket=/a", errContains: `--log-level "loud"`},
		{name: "panic level refused", args: "--log-level panic --device testdev,socket=/a", errContains: `--log-level "panic"`},
		{name: "bad format", args: "--log-format xml --device testdev,socket=/a", errContains: `--log-format "xml"`},
		{name: "unknown flag", args: "--sockets /a", errContains: "flag provided but not defined: -sockets"},
		{name: "positional", args: "--device testdev,socket=/a extra", errContains: `unexpected argument "extra"`},
		{name: "flag without value", args: "--device", errContains: "flag needs an argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseServe(strings.Fields(tt.args), kinds, io.Discard)
			if tt.errContains != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.errContains) {
					t.Fatalf("error %v, want a usage error containing %q", err, tt.errContains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.Limits = limitsConfig{} // limits_test.go checks them
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseServeHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		if _, err := parseServe([]string{arg}, deviceKinds(), io.Discard); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: error %v, want flag.ErrHelp", arg, err)
		}
	}
}

func TestPrintCapabilities(t *testing.T) {
	for _, args := range [][]string{{"--print-capabilities"}, {"serve", "--print-capabilities"}} {
		var stdout, stderr syncBuffer
		a := &app{stdout: &stdout, stderr: &stderr, kinds: deviceKinds()}
		if code := a.run(context.Background(), args); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		var caps capabilities
		if err := json.Unmarshal([]byte(stdout.String()), &caps); err != nil {
			t.Fatalf("%v: not JSON: %v\n%s", args, err, stdout.String())
		}
		var kinds []string
		keys := map[string][]string{}
		for _, d := range caps.Devices {
			kinds = append(kinds, d.Kind)
			for _, k := range d.Keys {
				keys[d.Kind] = append(keys[d.Kind], k.Name)
			}
		}
		want := map[string][]string{"myri10ge": {"mac", "serial", "slices", "pio"}, "myrimx": {"endpoints", "audit", "nic_id"}}
		if caps.Protocol != "vfio-user" || caps.Type != "vfio-user-pci" || !cmp.Equal(kinds, []string{"myri10ge", "myrimx", "testdev"}) ||
			!cmp.Equal(keys, want) || len(caps.Socket) != 3 {
			t.Errorf("%v: capabilities %+v", args, caps)
		}
	}
}

func TestQuoteIfNeeded(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/run/a.sock", "/run/a.sock"},
		{"/tmp/with space.sock", `"/tmp/with space.sock"`},
		{`/tmp/q"uote`, `"/tmp/q\"uote"`},
		{"/tmp/new\nline", `"/tmp/new\nline"`},
		{"/tmp/é.sock", "/tmp/é.sock"},
	}
	for _, tt := range tests {
		if got := quoteIfNeeded(tt.in); got != tt.want {
			t.Errorf("quoteIfNeeded(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
