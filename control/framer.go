package control

// framer cuts a QMP input stream into JSON values. QMP clients may send
// objects back to back without newlines (go-qemu's raw.Monitor does), so a
// line is not the unit: a value ends where its outermost brace closes.
// Anything else outside a value is junk, reported once per line.
type framer struct {
	max   int // longest value accepted
	buf   []byte
	depth int
	inStr bool
	esc   bool
	// discard: the current value or junk is being dropped up to the end
	// of the line; reason says why, for the one error it gets.
	discard bool
	junk    bool
}

// frame results
const (
	frameNone    = iota // need more bytes
	frameValue          // buf holds one complete value
	frameTooLong        // a value exceeded max: reported once, rest of its line dropped
	frameJunk           // bytes outside any value, up to the end of their line
	frameTooDeep        // nesting beyond maxDepth
)

// maxDepth bounds nesting, as QEMU's parser does (it allows 1024).
const maxDepth = 64

// feed takes one byte and says whether a frame completed.
func (f *framer) feed(c byte) int {
	if f.discard {
		if c == '\n' {
			f.reset()
		}
		return frameNone
	}
	if f.junk {
		if c == '\n' {
			f.reset()
			return frameJunk
		}
		return frameNone
	}
	if f.depth == 0 {
		switch c {
		case ' ', '\t', '\r', '\n':
			return frameNone
		case '{', '[':
		default:
			f.junk = true
			return frameNone
		}
	}
	if len(f.buf) >= f.max {
		f.reset()
		f.discard = c != '\n'
		return frameTooLong
	}
	f.buf = append(f.buf, c)
	if f.inStr {
		switch {
		case f.esc:
			f.esc = false
		case c == '\\':
			f.esc = true
		case c == '"':
			f.inStr = false
		}
		return frameNone
	}
	switch c {
	case '"':
		f.inStr = true
	case '{', '[':
		f.depth++
		if f.depth > maxDepth {
			f.reset()
			f.discard = true
			return frameTooDeep
		}
	case '}', ']':
		f.depth--
		if f.depth == 0 {
			return frameValue
		}
	}
	return frameNone
}

// take returns the completed value and starts the next.
func (f *framer) take() []byte {
	v := f.buf
	f.buf = nil
	f.depth, f.inStr, f.esc = 0, false, false
	return v
}

func (f *framer) reset() {
	f.buf = f.buf[:0]
	f.depth, f.inStr, f.esc, f.discard, f.junk = 0, false, false, false, false
}

// pending reports whether a value is half read (for end of stream).
func (f *framer) pending() bool { return len(f.buf) > 0 || f.junk }
