package vhostuser

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkVhostUser moves 1514-byte frames through the backend's rings in
// shared memory, both ways, against a raw baseline in the same run: the
// same bytes copied between the same guest buffers, with the same
// interrupt (one eventfd write) per batch of 16, and no ring. It reports
// frames/s.
func BenchmarkVhostUser(b *testing.B) {
	frame := testFrame(1514, 1)
	batch := make([][]byte, qsize)
	for i := range batch {
		batch[i] = frame
	}
	setup := func(b *testing.B) (*backendUnderTest, *frontEnd) {
		bt, path := startBackend(b)
		fe := dial(b, path)
		fe.setUp()
		<-bt.carrier
		return bt, fe
	}
	report := func(b *testing.B, start time.Time) {
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
	}
	b.Run("dir=in/impl=baseline", func(b *testing.B) {
		_, fe := setup(b)
		var hdr [netHdrSize]byte
		b.SetBytes(int64(len(frame)))
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			dst := fe.at(buf(rxQueue, i%qsize))
			copy(dst, hdr[:])
			copy(dst[netHdrSize:], frame)
			if i%qsize == qsize-1 {
				unix.Write(fe.call[rxQueue], u64(1))
			}
		}
		report(b, start)
	})
	b.Run("dir=in/impl=ours", func(b *testing.B) {
		bt, fe := setup(b)
		for i := range qsize {
			fe.setDesc(rxQueue, uint16(i), buf(rxQueue, i), 2048, descFWrite, 0)
		}
		a := fe.at(rxQueue*0x10000 + availOff)
		b.SetBytes(int64(len(frame)))
		b.ResetTimer()
		start := time.Now()
		for n := 0; n < b.N; n += qsize {
			for i := range qsize { // the guest re-posts every buffer
				binary.LittleEndian.PutUint16(a[4+2*((fe.avail[rxQueue]+uint16(i))%qsize):], uint16(i))
			}
			fe.avail[rxQueue] += qsize
			binary.LittleEndian.PutUint16(a[2:], fe.avail[rxQueue])
			bt.b.Receive(batch[:min(qsize, b.N-n)])
		}
		report(b, start)
		if st := bt.b.Stats(); st.RxNoBuffer != 0 || st.RxTooSmall != 0 || st.RingErrors != 0 {
			b.Fatalf("frames lost: %+v", st)
		}
	})
	b.Run("dir=out/impl=baseline", func(b *testing.B) {
		_, fe := setup(b)
		out := make([]byte, 2048)
		b.SetBytes(int64(len(frame)))
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			copy(out, fe.at(buf(txQueue, i%qsize))[netHdrSize:netHdrSize+len(frame)])
			if i%qsize == qsize-1 {
				unix.Write(fe.call[txQueue], u64(1))
			}
		}
		report(b, start)
	})
	b.Run("dir=out/impl=ours", func(b *testing.B) {
		bt, fe := setup(b)
		bt.b.cfg.Transmit = func([][]byte) {} // the switch's copy is not the backend's cost
		for i := range qsize {
			copy(fe.at(buf(txQueue, i))[netHdrSize:], frame)
			fe.setDesc(txQueue, uint16(i), buf(txQueue, i), uint32(netHdrSize+len(frame)), 0, 0)
		}
		a := fe.at(txQueue*0x10000 + availOff)
		b.SetBytes(int64(len(frame)))
		b.ResetTimer()
		start := time.Now()
		for n := 0; n < b.N; n += qsize {
			for i := range qsize {
				binary.LittleEndian.PutUint16(a[4+2*((fe.avail[txQueue]+uint16(i))%qsize):], uint16(i))
			}
			fe.avail[txQueue] += uint16(min(qsize, b.N-n))
			binary.LittleEndian.PutUint16(a[2:], fe.avail[txQueue])
			bt.b.mu.Lock()
			bt.b.drainTxLocked()
			bt.b.mu.Unlock()
		}
		report(b, start)
		if st := bt.b.Stats(); st.TxFrames != uint64(b.N) {
			b.Fatalf("%d of %d frames transmitted", st.TxFrames, b.N)
		}
	})
}
