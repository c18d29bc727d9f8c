package vfiouser

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{ID: 0xbeef, Command: CmdRegionWrite, Size: 36, Flags: FlagNoReply, Error: 0}
	b := make([]byte, HeaderSize)
	h.Put(b)
	want := []byte{0xef, 0xbe, 10, 0, 36, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0}
	if diff := cmp.Diff(want, b); diff != "" {
		t.Errorf("encoding (-want +got):\n%s", diff)
	}
	got, ok := DecodeHeader(b)
	if !ok || got != h {
		t.Errorf("DecodeHeader = %v, %v; want %v", got, ok, h)
	}
	if _, ok := DecodeHeader(b[:15]); ok {
		t.Error("15 bytes decoded as a header")
	}
	if !got.NoReply() || got.IsReply() || got.IsError() {
		t.Errorf("flag accessors wrong for %v", got)
	}
}

func TestCommandString(t *testing.T) {
	tests := map[Command]string{CmdVersion: "VERSION", CmdRegionWriteMulti: "REGION_WRITE_MULTI", 0: "Command(0)", 99: "Command(99)"}
	for c, want := range tests {
		if got := c.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint16(c), got, want)
		}
	}
}

func TestViews(t *testing.T) {
	tests := []struct {
		name  string
		valid bool
		got   bool
	}{
		{"region read count 0", false, regionAccess(make([]byte, 16)).Valid(false)},
		{"region read count 4", true, regionAccess(append(make([]byte, 12), 4, 0, 0, 0)).Valid(false)},
		{"region write count 4 data 4", true, regionAccess(append(append(make([]byte, 12), 4, 0, 0, 0), 1, 2, 3, 4)).Valid(true)},
		{"region write count 4 data 3", false, regionAccess(append(append(make([]byte, 12), 4, 0, 0, 0), 1, 2, 3)).Valid(true)},
		{"region read short", false, regionAccess(make([]byte, 15)).Valid(false)},
		{"version no json", true, version([]byte{0, 0, 0, 0}).Valid()},
		{"version json without NUL", false, version([]byte{0, 0, 0, 0, '{'}).Valid()},
		{"version 3 bytes", false, version([]byte{0, 0, 0}).Valid()},
		{"dma map argsz 32 size 1", true, dmaMap(append(append([]byte{32, 0, 0, 0}, make([]byte, 20)...), 1, 0, 0, 0, 0, 0, 0, 0)).Valid()},
		{"dma unmap all", true, dmaUnmap(append([]byte{24, 0, 0, 0, 2, 0, 0, 0}, make([]byte, 16)...)).Valid()},
		{"dma unmap bitmap", false, dmaUnmap(append([]byte{24, 0, 0, 0, 1, 0, 0, 0}, make([]byte, 16)...)).Valid()},
		{"irq set eventfd trigger", true, irqSet([]byte{20, 0, 0, 0, 0x24, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}).Valid()},
		{"irq set mask and unmask", false, irqSet([]byte{20, 0, 0, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}).Valid()},
	}
	for _, tt := range tests {
		if tt.got != tt.valid {
			t.Errorf("%s: Valid = %v, want %v", tt.name, tt.got, tt.valid)
		}
	}
}

func TestPickVersionReply(t *testing.T) {
	texts := versionReplies(DefaultMaxDataXfer, 65535)
	for _, tt := range []struct{ limit, want int }{{214, 0}, {130, 1}, {100, 2}, {20, 2}} {
		got := pickVersionReply(texts, tt.limit)
		if string(got) != string(texts[tt.want]) {
			t.Errorf("limit %d: got %q, want %q", tt.limit, got, texts[tt.want])
		}
	}
}
