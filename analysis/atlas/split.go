package atlas

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// splitter cuts a stream into raw records without decoding them: the
// elements of a top-level JSON array (several arrays one after the other are
// accepted, as `cat a.json b.json` makes them), or the lines of a JSON-lines
// file. It holds at most one record of at most max bytes; a longer one is
// skipped to its end and reported. It tracks strings and brackets only, so a
// record whose JSON is broken inside costs that record and no other, with
// one exception in arrays: a record that lacks a closing bracket runs on
// into the records after it (JSON cannot tell where it should have ended).
// In JSON lines a line is a record, whatever it holds.
type splitter struct {
	r     *bufio.Reader
	max   int
	lines bool // JSON lines, else a JSON array
	began bool // the format is known

	off   int64 // bytes consumed
	line  int64 // line of the next byte, from 1
	index int64 // index of the next record

	inArray bool // between '[' and ']'
	done    bool // trailing garbage was reported: nothing more to read
	buf     []byte
}

// element is one raw record; data is nil when problem says why it cannot be
// decoded.
type element struct {
	pos     Position
	data    []byte
	problem string
}

func newSplitter(r *bufio.Reader, max int) *splitter {
	return &splitter{r: r, max: max, line: 1}
}

func (s *splitter) readByte() (byte, error) {
	c, err := s.r.ReadByte()
	if err != nil {
		return 0, err
	}
	s.off++
	if c == '\n' {
		s.line++
	}
	return c, nil
}

func (s *splitter) unreadByte(c byte) {
	if s.r.UnreadByte() == nil {
		s.off--
		if c == '\n' {
			s.line--
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipSpace returns the next byte that is not white space (nor a UTF-8 byte
// order mark at the very start).
func (s *splitter) skipSpace() (byte, error) {
	for {
		c, err := s.readByte()
		if err != nil {
			return 0, err
		}
		if isSpace(c) {
			continue
		}
		if s.off == 1 && c == 0xEF {
			if b, err := s.r.Peek(2); err == nil && b[0] == 0xBB && b[1] == 0xBF {
				s.r.Discard(2)
				s.off += 2
				continue
			}
		}
		return c, nil
	}
}

// next returns the next record, io.EOF at the end, or the reader's error.
func (s *splitter) next() (element, error) {
	if s.done {
		return element{}, io.EOF
	}
	if !s.began {
		c, err := s.skipSpace()
		if err != nil {
			return element{}, err
		}
		s.began = true
		s.unreadByte(c)
		s.lines = c != '['
	}
	if s.lines {
		return s.nextLine()
	}
	return s.nextInArray()
}

// nextLine returns the next non-blank line.
func (s *splitter) nextLine() (element, error) {
	for {
		start, line := s.off, s.line
		s.buf = s.buf[:0]
		over, seen := false, false
		for {
			chunk, err := s.r.ReadSlice('\n')
			seen = seen || len(chunk) > 0
			s.off += int64(len(chunk))
			if !over {
				if len(s.buf)+len(chunk) > s.max+2 { // +2: "\r\n"
					over, s.buf = true, s.buf[:0]
				} else {
					s.buf = append(s.buf, chunk...)
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return element{}, err
			}
			if err == nil {
				s.line++
			} else if !seen {
				return element{}, io.EOF
			}
			break
		}
		if over {
			pos := Position{Record: s.index, Offset: start, Line: line}
			s.index++
			return element{pos: pos, problem: fmt.Sprintf("record larger than %d bytes", s.max)}, nil
		}
		lead := len(s.buf) - len(bytes.TrimLeft(s.buf, " \t\r\n"))
		data := bytes.TrimSpace(s.buf)
		if len(data) == 0 {
			continue // a blank line is not a record
		}
		pos := Position{Record: s.index, Offset: start + int64(lead), Line: line}
		s.index++
		return element{pos: pos, data: data}, nil
	}
}

// nextInArray returns the next element of the current array, opening the
// next array when one ends.
func (s *splitter) nextInArray() (element, error) {
	for {
		c, err := s.skipSpace()
		if err != nil {
			return element{}, err // io.EOF, also inside an unclosed array
		}
		switch {
		case !s.inArray && c == '[':
			s.inArray = true
		case !s.inArray:
			// Not an array where one should start: report it once, stop.
			pos := Position{Record: s.index, Offset: s.off - 1, Line: s.line}
			s.index++
			s.done = true
			return element{pos: pos, problem: fmt.Sprintf("unexpected %q after the end of the JSON array", c)}, nil
		case c == ']':
			s.inArray = false
		case c == ',':
			// separators (also stray ones) between elements
		default:
			return s.element(c)
		}
	}
}

// element reads one array element starting with c.
func (s *splitter) element(c byte) (element, error) {
	e := element{pos: Position{Record: s.index, Offset: s.off - 1, Line: s.line}}
	s.index++
	s.buf = append(s.buf[:0], c)
	over := false
	finish := func() (element, error) {
		switch {
		case over:
			e.problem = fmt.Sprintf("record larger than %d bytes", s.max)
		case e.problem == "":
			e.data = s.buf
		}
		return e, nil
	}
	// The open brackets, innermost last. A closing bracket closes its
	// opener and whatever was left open inside it (the record is broken
	// then, and stops at its own closing brace); one without an opener is
	// ignored. Past maxDepth only the count is kept.
	var stack []byte
	deeper := 0
	inString, escaped := false, false
	switch c {
	case '{', '[':
		stack = append(stack, c)
	case '"':
		inString = true
	default:
		// A literal or number (not a record, but it is one element).
		for {
			b, err := s.readByte()
			if errors.Is(err, io.EOF) {
				return finish()
			}
			if err != nil {
				return element{}, err
			}
			if b == ',' || b == ']' || b == '[' || b == '{' || b == '"' || isSpace(b) {
				s.unreadByte(b)
				return finish()
			}
			if !over {
				if over = len(s.buf) >= s.max; !over {
					s.buf = append(s.buf, b)
				}
			}
		}
	}
	for len(stack) > 0 || inString {
		w, err := s.window()
		if errors.Is(err, io.EOF) {
			if !over {
				e.problem = "the input ends inside the record"
			}
			return finish()
		}
		if err != nil {
			return element{}, err
		}
		i := 0
		for i < len(w) && (len(stack) > 0 || inString) {
			if inString {
				if escaped {
					escaped, i = false, i+1
					continue
				}
				// Strings make up most of a record: find their end with
				// IndexByte rather than byte by byte.
				rest := w[i:]
				q := bytes.IndexByte(rest, '"')
				span := rest
				if q >= 0 {
					span = rest[:q]
				}
				switch bs := bytes.IndexByte(span, '\\'); {
				case bs >= 0:
					i += bs + 1
					escaped = true
				case q >= 0:
					i += q + 1
					inString = false
				default:
					i = len(w)
				}
				continue
			}
			b := w[i]
			i++
			switch b {
			case '"':
				inString = true
			case '{', '[':
				if len(stack) < maxDepth {
					stack = append(stack, b)
					break
				}
				deeper++
				if e.problem == "" {
					e.problem = fmt.Sprintf("nested deeper than %d levels", maxDepth)
				}
			case '}', ']':
				if deeper > 0 {
					deeper--
					break
				}
				open := byte('{')
				if b == ']' {
					open = '['
				}
				if j := bytes.LastIndexByte(stack, open); j >= 0 {
					if j != len(stack)-1 && e.problem == "" {
						e.problem = fmt.Sprintf("%q closes an unclosed %q", b, stack[len(stack)-1])
					}
					stack = stack[:j]
				} else if e.problem == "" {
					e.problem = fmt.Sprintf("%q without an opening bracket", b)
				}
			}
		}
		s.keep(w[:i], &over)
		s.r.Discard(i)
	}
	return finish()
}

// window returns the bytes buffered, reading more when none are.
func (s *splitter) window() ([]byte, error) {
	if s.r.Buffered() == 0 {
		if _, err := s.r.Peek(1); err != nil {
			return nil, err
		}
	}
	return s.r.Peek(s.r.Buffered())
}

// keep adds bytes read to the record (unless it is already too large) and
// counts them.
func (s *splitter) keep(b []byte, over *bool) {
	if !*over {
		if len(s.buf)+len(b) > s.max {
			*over, s.buf = true, s.buf[:0]
		} else {
			s.buf = append(s.buf, b...)
		}
	}
	s.off += int64(len(b))
	s.line += int64(bytes.Count(b, []byte{'\n'}))
}
