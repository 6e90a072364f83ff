package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// HTTPHandler answers every request as an anycast CDN node would: the site
// that served it is in the X-Served-By header and in the body.
func HTTPHandler(site string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", site)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, "served-by=%s\n", site)
	})
}

// ServeHTTP runs the identity responder of a site on every listen address
// until ctx ends. The lab starts it inside the site's namespace.
func ServeHTTP(ctx context.Context, site string, listen []string) error {
	if site == "" || len(listen) == 0 {
		return errors.New("httpd needs a site and at least one listen address")
	}
	srv := &http.Server{
		Handler:           HTTPHandler(site),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       30 * time.Second,
	}
	errc := make(chan error, len(listen))
	for _, addr := range listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			srv.Close()
			return fmt.Errorf("httpd %s: %w", site, err)
		}
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		srv.Close()
		return fmt.Errorf("httpd %s: %w", site, err)
	}
}
