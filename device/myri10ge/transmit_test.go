package myri10ge

import (
	"testing"
	"time"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fault/faulttest"
)

// The send gather, made inside a dma.Run, still passes the dma door: a
// dma.read=fail rule on the frame's buffer aborts it (a DMA error, the
// packet dropped, the slice halted), and the run is over once the
// doorbell's store returns: a DMA_UNMAP does not wait for it.
func TestSendGatherPassesDMADoor(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	set := faulttest.Set(t, 1, "g: dma.read=fail; iova=0x100000..0x100fff; once")
	r.nic.mu.Lock()
	r.nic.host.Mem = dma.WithFaults(r.mem, set, "myri0")
	r.nic.mu.Unlock()
	r.sendOne(0)
	if st := r.nic.Stats(); st.DMAErrors != 1 || st.TxDropped != 1 || st.TxFrames != 0 {
		t.Errorf("stats %+v: want one DMA error, one packet dropped, no frame sent", st)
	}
	if rs := set.Rules(); len(rs) != 1 || rs[0].Fired != 1 {
		t.Errorf("rules %+v: want g fired once", rs)
	}
	if r.sent(50 * time.Millisecond) {
		t.Error("a frame went out although its gather failed")
	}
	done := make(chan error, 1)
	go func() { done <- r.mem.Remove(0, ramSize) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		// End the leaked run, or the rig's cleanup would wait forever too.
		r.nic.mu.Lock()
		r.nic.slices[0].tx.run.End()
		r.nic.mu.Unlock()
		<-done
		t.Fatal("DMA_UNMAP still waited after the doorbell returned: the send run was not ended")
	}
}
