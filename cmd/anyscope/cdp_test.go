package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
)

// chromeFlags start Chromium headless, offline and without a profile's
// background work (see /work/shared/ENVIRONMENT.md).
var chromeFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--hide-scrollbars", "--window-size=1280,900",
	// x/net/websocket always sends an Origin header; DevTools refuses
	// origins it was not told about.
	"--remote-allow-origins=http://127.0.0.1",
	"--remote-debugging-port=0",
}

// chrome is a headless Chromium driven over the DevTools protocol (CDP):
// JSON-RPC over one websocket to the browser, commands to a page through a
// flat session, events dispatched by method.
type chrome struct {
	cmd     *exec.Cmd
	ws      *websocket.Conn
	mu      sync.Mutex
	next    int64
	pending map[int64]chan cdpMessage
	on      map[string][]func(session string, params json.RawMessage)
	done    chan struct{} // closed when the reader stops
	readErr error
}

// cdpMessage is a command, its reply or an event.
type cdpMessage struct {
	ID        int64           `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    any             `json:"params,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// cdpEvent is an incoming event before its params are decoded.
type cdpEvent struct {
	Method    string          `json:"method"`
	Params    json.RawMessage `json:"params"`
	SessionID string          `json:"sessionId"`
	ID        int64           `json:"id"`
	Result    json.RawMessage `json:"result"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// startChrome runs the Chromium at path with a fresh profile in userDir
// (its log in userDir/chrome.log) and connects to its DevTools endpoint,
// which Chromium announces in userDir/DevToolsActivePort.
func startChrome(ctx context.Context, path, userDir string) (*chrome, error) {
	logf, err := os.Create(filepath.Join(userDir, "chrome.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append(append([]string{}, chromeFlags...), "--user-data-dir="+filepath.Join(userDir, "profile"), "about:blank")
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start chromium: %w", err)
	}
	c := &chrome{cmd: cmd, pending: map[int64]chan cdpMessage{}, on: map[string][]func(string, json.RawMessage){}, done: make(chan struct{})}
	portFile := filepath.Join(userDir, "profile", "DevToolsActivePort")
	var port, wsPath string
	for port == "" {
		if b, err := os.ReadFile(portFile); err == nil {
			if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) == 2 {
				port, wsPath = lines[0], lines[1]
				break
			}
		}
		select {
		case <-ctx.Done():
			c.close()
			return nil, fmt.Errorf("chromium did not announce its DevTools port (log %s): %w", logf.Name(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	ws, err := websocket.Dial("ws://127.0.0.1:"+port+wsPath, "", "http://127.0.0.1")
	if err != nil {
		c.close()
		return nil, fmt.Errorf("connect to chromium's DevTools: %w", err)
	}
	ws.MaxPayloadBytes = 64 << 20 // full-page screenshots
	c.ws = ws
	go c.read()
	return c, nil
}

// read dispatches replies to their callers and events to their handlers
// until the connection ends.
func (c *chrome) read() {
	defer close(c.done)
	for {
		var m cdpEvent
		if err := websocket.JSON.Receive(c.ws, &m); err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		if m.ID != 0 {
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- cdpMessage{ID: m.ID, Result: m.Result, Error: m.Error}
			}
			continue
		}
		hs := c.on[m.Method]
		c.mu.Unlock()
		for _, h := range hs {
			h(m.SessionID, m.Params)
		}
	}
}

// handle calls h for every event named method (on the reader goroutine:
// h must not wait for a command's reply).
func (c *chrome) handle(method string, h func(session string, params json.RawMessage)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on[method] = append(c.on[method], h)
}

// call sends method with params to session ("": the browser) and decodes
// the result into out (nil: ignored).
func (c *chrome) call(ctx context.Context, session, method string, params, out any) error {
	ch := make(chan cdpMessage, 1)
	c.mu.Lock()
	c.next++
	id := c.next
	c.pending[id] = ch
	c.mu.Unlock()
	if params == nil {
		params = struct{}{}
	}
	if err := websocket.JSON.Send(c.ws, cdpMessage{ID: id, Method: method, Params: params, SessionID: session}); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("%s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(m.Result, out); err != nil {
			return fmt.Errorf("%s: result: %w", method, err)
		}
		return nil
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("%s: connection closed: %w", method, c.readErr)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab of the browser, attached through a flat session.
type page struct {
	c       *chrome
	session string
	loads   chan struct{} // one per load event
}

// newPage opens a blank page target, attaches to it and enables the
// domains whose events tests watch (Page, Runtime, Log).
func (c *chrome) newPage(ctx context.Context) (*page, error) {
	var t struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &t); err != nil {
		return nil, err
	}
	var s struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": t.TargetID, "flatten": true}, &s); err != nil {
		return nil, err
	}
	p := &page{c: c, session: s.SessionID, loads: make(chan struct{}, 16)}
	c.handle("Page.loadEventFired", func(session string, _ json.RawMessage) {
		if session == p.session {
			select {
			case p.loads <- struct{}{}:
			default:
			}
		}
	})
	for _, domain := range []string{"Page", "Runtime", "Log"} {
		if err := p.call(ctx, domain+".enable", nil, nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// call sends a command to the page.
func (p *page) call(ctx context.Context, method string, params, out any) error {
	return p.c.call(ctx, p.session, method, params, out)
}

// navigate loads url and waits for its load event.
func (p *page) navigate(ctx context.Context, url string) error {
	for len(p.loads) > 0 {
		<-p.loads
	}
	var r struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.call(ctx, "Page.navigate", map[string]any{"url": url}, &r); err != nil {
		return err
	}
	if r.ErrorText != "" {
		return fmt.Errorf("navigate to %s: %s", url, r.ErrorText)
	}
	select {
	case <-p.loads:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("navigate to %s: no load event: %w", url, ctx.Err())
	}
}

// eval evaluates a JavaScript expression in session's page and decodes its
// value (returned by value, so JSON-able) into out.
func (p *page) eval(ctx context.Context, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := p.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return fmt.Errorf("evaluate %q: %s", expr, r.ExceptionDetails.Text)
	}
	return json.Unmarshal(r.Result.Value, out)
}

// screenshot captures the page as PNG: clip (x, y, width, height in
// CSS pixels) or, when nil, the whole page up to maxHeight.
func (p *page) screenshot(ctx context.Context, clip []float64, maxHeight float64) ([]byte, error) {
	if clip == nil {
		var m struct {
			Content struct {
				Width  float64 `json:"width"`
				Height float64 `json:"height"`
			} `json:"cssContentSize"`
		}
		if err := p.call(ctx, "Page.getLayoutMetrics", nil, &m); err != nil {
			return nil, err
		}
		clip = []float64{0, 0, m.Content.Width, min(m.Content.Height, maxHeight)}
	}
	var r struct {
		Data string `json:"data"`
	}
	err := p.call(ctx, "Page.captureScreenshot", map[string]any{
		"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": clip[0], "y": clip[1], "width": clip[2], "height": clip[3], "scale": 1},
	}, &r)
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(r.Data)
}

// close ends the connection and the browser and waits for it.
func (c *chrome) close() error {
	if c.ws != nil {
		c.ws.Close()
		<-c.done
	}
	if c.cmd.Process == nil {
		return nil
	}
	c.cmd.Process.Kill()
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // killed: expected
	}
	return err
}
