package vfiouser

import (
	"errors"
	"fmt"
	"io"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The transport: one message at a time off a blocking AF_UNIX stream
// socket, never reading past the current message, so every fd that arrives
// belongs to the message whose bytes carried it (notes 1.3). Replies and
// server requests go out as one sendmsg each.

// errFraming is a header the stream cannot be trusted after (size < 16 or
// above the maximum): the connection is dropped after an error reply.
var errFraming = errors.New("bad message size")

// message is one received message. payload aliases the connection's read
// buffer and is valid until the next read. fds are owned by whoever
// handles the message: each must be closed or handed over.
type message struct {
	hdr     Header
	payload []byte
	fds     []int
	// ctrunc: the kernel dropped fds that did not fit (MSG_CTRUNC).
	ctrunc bool
}

// receiver reads messages from fd.
type receiver struct {
	fd     int
	maxMsg int
	hdr    [HeaderSize]byte
	buf    []byte
	oob    []byte
	fds    []int
}

func newReceiver(fd, maxMsg int) *receiver {
	return &receiver{fd: fd, maxMsg: maxMsg, oob: make([]byte, unix.CmsgSpace(4*maxMsgFDs))}
}

// read reads the next message. io.EOF: the peer closed between messages;
// io.ErrUnexpectedEOF: it closed inside one. An errFraming error comes with
// the decoded header (and any fds, closed already) so the caller can send
// an error reply before dropping the connection.
func (r *receiver) read(m *message) error {
	r.fds = r.fds[:0]
	*m = message{}
	n, ctrunc, err := r.recvFull(r.hdr[:])
	m.ctrunc = ctrunc
	if err != nil {
		closeFDs(r.fds)
		if errors.Is(err, io.EOF) && n > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	m.hdr, _ = DecodeHeader(r.hdr[:])
	if m.hdr.Size < HeaderSize || int64(m.hdr.Size) > int64(r.maxMsg) {
		closeFDs(r.fds)
		return fmt.Errorf("vfiouser: %v: size %d (want %d..%d): %w", m.hdr.Command, m.hdr.Size, HeaderSize, r.maxMsg, errFraming)
	}
	size := int(m.hdr.Size) - HeaderSize
	if cap(r.buf) < size {
		r.buf = make([]byte, size)
	}
	m.payload = r.buf[:size]
	if size > 0 {
		_, ctrunc, err = r.recvFull(m.payload)
		m.ctrunc = m.ctrunc || ctrunc
		if err != nil {
			closeFDs(r.fds)
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	if len(r.fds) > 0 {
		// A fresh slice: handlers hand fds on (SetIRQs, DMA_MAP), and
		// fd-carrying messages are rare.
		m.fds = append([]int(nil), r.fds...)
	}
	return nil
}

// recvFull reads exactly len(p) bytes, collecting any fds into r.fds.
func (r *receiver) recvFull(p []byte) (n int, ctrunc bool, err error) {
	for n < len(p) {
		m, oobn, flags, err := recvmsg(r.fd, p[n:], r.oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return n, ctrunc, fmt.Errorf("vfiouser: recvmsg: %w", err)
		}
		if oobn > 0 {
			r.fds = appendRights(r.fds, r.oob[:oobn])
		}
		if flags&unix.MSG_CTRUNC != 0 {
			ctrunc = true
		}
		if m == 0 {
			return n, ctrunc, io.EOF
		}
		n += m
	}
	return n, ctrunc, nil
}

// recvmsg is one recvmsg(2) on a connected socket. Unlike unix.Recvmsg it
// does not decode (and allocate) the peer address, which a connected
// stream socket does not need: the hot path allocates nothing.
func recvmsg(fd int, p, oob []byte, flags int) (n, oobn, recvflags int, err error) {
	var iov unix.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	var msg unix.Msghdr
	msg.Iov = &iov
	msg.SetIovlen(1)
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

// appendRights appends the fds of every SCM_RIGHTS message in oob.
func appendRights(fds []int, oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fds
	}
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		rights, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, rights...)
	}
	return fds
}

// sendMsg writes b as one sendmsg with fds attached; only a huge message
// the kernel takes in parts continues without fds (notes 1.3).
func sendMsg(fd int, b []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return fmt.Errorf("vfiouser: sendmsg: %w", err)
		}
		b, oob = b[n:], nil
	}
	return nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
