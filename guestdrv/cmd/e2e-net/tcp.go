package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// A stream is a 16-byte header, streamMagic and the connection's index
// (big-endian u32, then 4 zero bytes), followed by the payload: bytes of
// ChaCha8 seeded with the sender's seed and the index. Only the payload is
// counted and hashed; the header lets the receiver name the stream, so the
// host can pair tcp.send:L/i with tcp.recv:L/i whatever the accept order.
const (
	streamMagic = "E2ENET01"
	headerLen   = 16
	chunkSize   = 64 << 10
)

// payload returns the generator of stream idx for seed.
func payload(seed uint64, idx int) *rand.ChaCha8 {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(idx))
	copy(key[16:], streamMagic)
	return rand.NewChaCha8(key)
}

func streamHeader(idx int) []byte {
	h := make([]byte, headerLen)
	copy(h, streamMagic)
	binary.BigEndian.PutUint32(h[8:], uint32(idx))
	return h
}

func parseHeader(h []byte) (int, error) {
	if len(h) != headerLen || string(h[:8]) != streamMagic {
		return 0, fmt.Errorf("bad stream header %q", h)
	}
	return int(binary.BigEndian.Uint32(h[8:])), nil
}

// streamResult is one connection's end of a stream.
type streamResult struct {
	Idx     int
	Bytes   uint64
	Sum     [sha256.Size]byte
	Elapsed time.Duration
	Err     error
}

func (r streamResult) detail() string {
	return fmt.Sprintf("bytes=%d sha256=%x seconds=%.2f", r.Bytes, r.Sum, r.Elapsed.Seconds())
}

// mbps is bytes per second in MB (10^6 bytes).
func mbps(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds() / 1e6
}

// watch starts the helpers of a run: with stopFile, a poller whose channel
// closes once that file exists; with progressFile, a writer of *n there
// every 200 ms. finish stops both and waits for them, so no file is
// written after it returns (the last progress write happens inside it).
func watch(stopFile, progressFile string, n *atomic.Uint64) (stop <-chan struct{}, finish func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	s := make(chan struct{})
	if stopFile != "" {
		wg.Go(func() { runStopWatch(stopFile, s, done) })
	}
	if progressFile != "" {
		writeProgress(progressFile, 0)
		wg.Go(func() { runProgress(progressFile, n, done) })
	}
	return s, func() {
		close(done)
		wg.Wait()
	}
}

// runStopWatch closes stop once file exists (polled), or returns when done
// closes.
func runStopWatch(file string, stop chan<- struct{}, done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(file); err == nil {
			close(stop)
			return
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// runProgress writes *n to file every 200 ms, and once more when done
// closes.
func runProgress(file string, n *atomic.Uint64, done <-chan struct{}) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			writeProgress(file, n.Load())
			return
		case <-t.C:
			writeProgress(file, n.Load())
		}
	}
}

// cmdTCPServe accepts -conns streams on -port and reads each to its end.
//
// Results: tcp.recv:LABEL/IDX per stream (bytes, sha256, seconds; fail if
// -bytes is set and differs), then tcp.recv:LABEL (conns, bytes, seconds
// from the first accept to the last stream's end, MBps). With -stop-file,
// once that file exists every stream gets one byte back, which tells its
// sender to finish. With -progress-file, the bytes received so far are
// written there every 200 ms (for grows).
func cmdTCPServe(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("tcp-serve", flag.ContinueOnError)
	port := fs.Int("port", 5001, "TCP port")
	conns := fs.Int("conns", 1, "streams to accept")
	want := fs.Uint64("bytes", 0, "bytes each stream must carry (0: any)")
	label := fs.String("label", "tcp", "result name suffix")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole run")
	stopFile := fs.String("stop-file", "", "when this file appears, ask every sender to finish")
	progressFile := fs.String("progress-file", "", "write the bytes received so far here")
	out := fs.String("out", "", "write the stream to this file (one stream only)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *conns < 1 || (*out != "" && *conns != 1) {
		return usageErr("tcp-serve: bad arguments %q", args)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{Port: *port})
	if err != nil {
		p.Failf("tcp.recv:"+*label, "listen: %v", err)
		return nil
	}
	defer ln.Close()
	serveStreams(p, ln, serveOpts{conns: *conns, want: *want, label: *label, deadline: time.Now().Add(*timeout),
		stopFile: *stopFile, progressFile: *progressFile, out: *out})
	return nil
}

type serveOpts struct {
	conns        int
	want         uint64
	label        string
	deadline     time.Time
	stopFile     string
	progressFile string
	out          string // write the (single) stream to this file
}

// serveStreams is tcp-serve on a listening socket.
func serveStreams(p *result.Printer, ln *net.TCPListener, o serveOpts) {
	name := "tcp.recv:" + o.label
	deadline := o.deadline
	_ = ln.SetDeadline(deadline)

	var total atomic.Uint64
	stop, finish := watch(o.stopFile, o.progressFile, &total)
	defer finish()

	var (
		mu      sync.Mutex
		results []streamResult
		wg      sync.WaitGroup
		first   time.Time
	)
	for i := 0; i < o.conns; i++ {
		c, err := ln.AcceptTCP()
		if err != nil {
			p.Failf(name, "accepted %d of %d streams: %v", i, o.conns, err)
			break
		}
		if first.IsZero() {
			first = time.Now()
		}
		wg.Go(func() {
			r := receiveStream(c, deadline, stop, &total, o.out)
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	end := time.Now()
	sort.Slice(results, func(i, j int) bool { return results[i].Idx < results[j].Idx })
	var sum uint64
	failed := false
	for _, r := range results {
		n := name + "/" + strconv.Itoa(r.Idx)
		switch {
		case r.Err != nil:
			failed = true
			p.Failf(n, "%s error=%q", r.detail(), r.Err)
		case o.want > 0 && r.Bytes != o.want:
			failed = true
			p.Failf(n, "%s error=\"got %d bytes, want %d\"", r.detail(), r.Bytes, o.want)
		default:
			p.Passf(n, "%s", r.detail())
		}
		sum += r.Bytes
	}
	d := end.Sub(first)
	detail := fmt.Sprintf("conns=%d bytes=%d seconds=%.2f MBps=%.2f", len(results), sum, d.Seconds(), mbps(sum, d))
	if failed || len(results) != o.conns {
		p.Failf(name, "%s", detail)
	} else {
		p.Passf(name, "%s", detail)
	}
}

// receiveStream reads one stream to EOF, hashing the payload, and closes
// the connection.
func receiveStream(c *net.TCPConn, deadline time.Time, stop <-chan struct{}, total *atomic.Uint64, out string) streamResult {
	defer c.Close()
	start := time.Now()
	r := streamResult{Idx: -1}
	var file *os.File
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			r.Err = err
			return r
		}
		file = f
		defer func() {
			if err := file.Close(); err != nil && r.Err == nil {
				r.Err = err
			}
		}()
	}
	_ = c.SetDeadline(deadline)
	h := make([]byte, headerLen)
	if _, err := io.ReadFull(c, h); err != nil {
		r.Err = fmt.Errorf("reading the header: %w", err)
		return r
	}
	idx, err := parseHeader(h)
	if err != nil {
		r.Err = err
		return r
	}
	r.Idx = idx
	sent := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { // tell the sender to finish once asked to
		select {
		case <-stop:
			_, _ = c.Write([]byte{'S'})
		case <-sent:
		}
	})
	defer close(sent)
	sum := sha256.New()
	buf := make([]byte, chunkSize)
	for {
		n, err := c.Read(buf)
		sum.Write(buf[:n])
		r.Bytes += uint64(n)
		total.Add(uint64(n))
		if file != nil && n > 0 {
			if _, werr := file.Write(buf[:n]); werr != nil {
				r.Err = werr
				break
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.Err = err
			break
		}
	}
	r.Elapsed = time.Since(start)
	copy(r.Sum[:], sum.Sum(nil))
	return r
}

// cmdTCPSend connects -conns streams to -to:-port (retrying until the peer
// listens) and sends -bytes of payload on each, or, with -bytes 0, until
// the peer sends a byte back or -stop-file exists. Each stream then half
// closes and waits for the receiver to close: every byte arrived.
//
// Results: tcp.send:LABEL/IDX per stream (bytes, sha256, seconds), then
// tcp.send:LABEL (conns, bytes, seconds, MBps).
func cmdTCPSend(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("tcp-send", flag.ContinueOnError)
	to := fs.String("to", "", "peer IP address")
	port := fs.Int("port", 5001, "TCP port")
	conns := fs.Int("conns", 1, "parallel streams")
	size := fs.Uint64("bytes", 64<<20, "payload bytes per stream; 0: until told to stop")
	seed := fs.Uint64("seed", 1, "payload seed")
	label := fs.String("label", "tcp", "result name suffix")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole run, connecting included")
	stopFile := fs.String("stop-file", "", "finish once this file exists")
	progressFile := fs.String("progress-file", "", "write the bytes sent so far here")
	file := fs.String("file", "", "send this file instead of generated bytes (one stream only)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *to == "" || *conns < 1 || (*file != "" && *conns != 1) {
		return usageErr("tcp-send: bad arguments %q", args)
	}
	sendStreams(p, net.JoinHostPort(*to, strconv.Itoa(*port)), sendOpts{conns: *conns, size: *size, seed: *seed,
		label: *label, deadline: time.Now().Add(*timeout), stopFile: *stopFile, progressFile: *progressFile, file: *file})
	return nil
}

type sendOpts struct {
	conns        int
	size, seed   uint64
	label        string
	deadline     time.Time
	stopFile     string
	progressFile string
	file         string // send this file's content instead of generated bytes
}

// sendStreams is tcp-send to addr.
func sendStreams(p *result.Printer, addr string, o sendOpts) {
	name := "tcp.send:" + o.label
	var total atomic.Uint64
	stop, finish := watch(o.stopFile, o.progressFile, &total)
	defer finish()

	start := time.Now()
	results := make([]streamResult, o.conns)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			results[i] = sendStream(addr, i, o, stop, &total)
		})
	}
	wg.Wait()
	d := time.Since(start)
	var sum uint64
	failed := false
	for _, r := range results {
		n := name + "/" + strconv.Itoa(r.Idx)
		if r.Err != nil {
			failed = true
			p.Failf(n, "%s error=%q", r.detail(), r.Err)
		} else {
			p.Passf(n, "%s", r.detail())
		}
		sum += r.Bytes
	}
	detail := fmt.Sprintf("conns=%d bytes=%d seconds=%.2f MBps=%.2f", len(results), sum, d.Seconds(), mbps(sum, d))
	if failed {
		p.Failf(name, "%s", detail)
	} else {
		p.Passf(name, "%s", detail)
	}
}

// dial connects to addr, retrying until deadline: the peer boots at the
// same time and may not listen yet. One attempt may take up to 30 s (the
// kernel retransmits the SYN meanwhile): a handshake given up while the
// peer completes it leaves the peer a stream that ends before its header,
// which it counts against -conns (seen with 32 streams on a loaded host).
func dial(addr string, deadline time.Time) (*net.TCPConn, error) {
	for {
		c, err := net.DialTimeout("tcp", addr, max(min(time.Until(deadline), 30*time.Second), time.Second))
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		if time.Now().Add(300 * time.Millisecond).After(deadline) {
			return nil, fmt.Errorf("connect %s: %w", addr, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func sendStream(addr string, idx int, o sendOpts, stop <-chan struct{}, total *atomic.Uint64) streamResult {
	r := streamResult{Idx: idx}
	size, deadline := o.size, o.deadline
	var src io.Reader = payload(o.seed, idx)
	if o.file != "" {
		f, err := os.Open(o.file)
		if err != nil {
			r.Err = err
			return r
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			r.Err = err
			return r
		}
		src, size = f, uint64(st.Size())
		if size == 0 {
			r.Err = fmt.Errorf("%s is empty", o.file)
			return r
		}
	}
	c, err := dial(addr, deadline)
	if err != nil {
		r.Err = err
		return r
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(streamHeader(idx)); err != nil {
		r.Err = err
		return r
	}
	// The reader notices the receiver's stop byte and, after our half
	// close, its close (EOF).
	peerStop, eof := make(chan struct{}), make(chan error, 1)
	var wg sync.WaitGroup
	defer func() {
		c.Close() // ends the reader if the receiver did not
		wg.Wait()
	}()
	wg.Go(func() {
		b := make([]byte, 64)
		stopped := false
		for {
			n, err := c.Read(b)
			if n > 0 && !stopped && bytes.IndexByte(b[:n], 'S') >= 0 {
				close(peerStop)
				stopped = true
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				eof <- err
				return
			}
		}
	})
	sum := sha256.New()
	buf := make([]byte, chunkSize)
	for size == 0 || r.Bytes < size {
		if size == 0 && (closed(stop) || closed(peerStop)) {
			break
		}
		chunk := buf
		if size > 0 && size-r.Bytes < uint64(len(chunk)) {
			chunk = chunk[:size-r.Bytes]
		}
		if _, err := io.ReadFull(src, chunk); err != nil {
			r.Err = fmt.Errorf("reading the payload: %w", err)
			break
		}
		n, err := c.Write(chunk)
		sum.Write(chunk[:n])
		r.Bytes += uint64(n)
		total.Add(uint64(n))
		if err != nil {
			r.Err = err
			break
		}
	}
	copy(r.Sum[:], sum.Sum(nil))
	if r.Err == nil {
		if err := c.CloseWrite(); err != nil {
			r.Err = err
		} else if err := <-eof; err != nil {
			r.Err = fmt.Errorf("waiting for the receiver to close: %w", err)
		}
	}
	r.Elapsed = time.Since(start)
	return r
}

// closed reports whether c is closed, without waiting.
func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// cmdGenHash measures how fast this guest generates and hashes a stream,
// without any network: the ceiling of what tcp-send can do. Result
// genhash, info (bytes, seconds, MBps).
func cmdGenHash(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("gen-hash", flag.ContinueOnError)
	size := fs.Uint64("bytes", 16<<20, "bytes to generate and hash")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageErr("gen-hash [-bytes B]")
	}
	start := time.Now()
	gen := payload(1, 0)
	sum := sha256.New()
	buf := make([]byte, chunkSize)
	for n := uint64(0); n < *size; n += chunkSize {
		_, _ = gen.Read(buf)
		sum.Write(buf)
	}
	d := time.Since(start)
	gd := time.Now()
	for n := uint64(0); n < *size; n += chunkSize {
		_, _ = gen.Read(buf)
	}
	genOnly := time.Since(gd)
	p.Infof("genhash", "bytes=%d seconds=%.2f MBps=%.2f generate_only_MBps=%.2f", *size, d.Seconds(), mbps(*size, d), mbps(*size, genOnly))
	return nil
}

// cmdMakeFile writes -bytes of stream payload (-seed, index 0) to PATH.
// Result file:BASE, pass with its bytes and SHA-256.
func cmdMakeFile(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("make-file", flag.ContinueOnError)
	size := fs.Int64("bytes", 16<<20, "file size")
	seed := fs.Uint64("seed", 1, "payload seed")
	if len(args) < 1 {
		return usageErr("make-file PATH [-bytes B] [-seed S]")
	}
	path := args[0]
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 || *size < 0 {
		return usageErr("make-file: bad arguments %q", args)
	}
	name := "file:" + filepath.Base(path)
	f, err := os.Create(path)
	if err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	sum := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, sum), payload(*seed, 0), *size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	p.Passf(name, "path=%s bytes=%d sha256=%x", path, *size, sum.Sum(nil))
	return nil
}

// cmdSHA256 hashes a file as it is on disk. Result file:BASE.
func cmdSHA256(p *result.Printer, args []string) error {
	if len(args) != 1 {
		return usageErr("sha256 PATH")
	}
	path := args[0]
	name := "file:" + filepath.Base(path)
	f, err := os.Open(path)
	if err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	defer f.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, f)
	if err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	p.Passf(name, "path=%s bytes=%d sha256=%x", path, n, sum.Sum(nil))
	return nil
}
