// Package containers ties a connecting process to the container it runs
// in, and keeps every container of the hooked runtime under the hooks.
//
// A container is found from the process's cgroup: the runtime names each
// container's cgroup after its id (cgroupfs: <parent>/<id>; systemd:
// docker-<id>.scope, cri-containerd-<id>.scope, libpod-<id>.scope). Its
// name, image and labels come from the runtime's API (Docker's Engine API
// on its unix socket), cached per container in a bounded cache.
//
// The Watcher follows the runtime's container start events. A container
// whose cgroup is outside every hooked cgroup (`docker run
// --cgroup-parent` elsewhere) has a direct path to the network; the Watcher
// reports it and, by default, kills it.
//
// Docker's Go SDK is not used: the three calls needed (inspect, list,
// events, kill) are plain JSON over HTTP, and the SDK would bring a large
// module tree into a security daemon for them.
package containers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Container is what the runtime says of one container.
type Container struct {
	ID      string            // full id (64 hex digits)
	Name    string            // without the leading slash
	Image   string            // as the container was created from (Config.Image)
	ImageID string            // the image's content digest
	Labels  map[string]string // the runtime's labels (a job runner's among them)
	Pid     int               // the container's init process, in the host's pid namespace; 0 when stopped
	Runtime string            // "docker"
}

// idRe matches a container id in a cgroup path element.
var idRe = regexp.MustCompile(`^(?:docker-|cri-containerd-|crio-|libpod-)?([0-9a-f]{64})(?:\.scope)?$`)

// IDFromCgroup returns the container id a cgroup path names: the last path
// element that is (or wraps) 64 hex digits. ok is false for a cgroup of no
// container.
func IDFromCgroup(path string) (id string, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if m := idRe.FindStringSubmatch(parts[i]); m != nil {
			return m[1], true
		}
	}
	return "", false
}

// CgroupOf returns the container's own cgroup for a process cgroup path:
// the path up to the element naming the container. ok is false when the
// path names no container.
func CgroupOf(path string) (cgroup string, ok bool) {
	parts := strings.Split(path, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if idRe.MatchString(parts[i]) {
			return strings.Join(parts[:i+1], "/"), true
		}
	}
	return "", false
}

// Docker is a client of one Docker Engine API socket. It is safe for
// concurrent use.
type Docker struct {
	socket string
	hc     *http.Client
	stream *http.Client // no overall timeout: the event stream stays open

	mu    sync.Mutex
	cache map[string]*cached
	order []string // insertion order, for eviction
}

type cached struct {
	c   Container
	err error
	at  time.Time
}

// cacheSize bounds the inspected containers remembered; cacheMiss is how
// long a failed inspect is remembered (a container that no longer exists).
const (
	cacheSize = 1024
	cacheMiss = 5 * time.Second
	cacheHit  = 10 * time.Minute
)

// NewDocker returns a client of the Engine API on socket (a unix socket
// path, such as /run/docker.sock).
func NewDocker(socket string) *Docker {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}
	tr := &http.Transport{DialContext: dial, MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second}
	return &Docker{
		socket: socket,
		hc:     &http.Client{Transport: tr, Timeout: 5 * time.Second},
		stream: &http.Client{Transport: &http.Transport{DialContext: dial}},
		cache:  map[string]*cached{},
	}
}

// Socket returns the API socket's path.
func (d *Docker) Socket() string { return d.socket }

// apiError is the Engine API's error body.
type apiError struct {
	Message string `json:"message"`
}

// ErrNoSuchContainer is returned by Inspect for an id the runtime does not
// know (any more).
var ErrNoSuchContainer = errors.New("no such container")

func (d *Docker) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return fmt.Errorf("docker API at %s: %w", d.socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("docker API %s %s: %w", method, path, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return ErrNoSuchContainer
	}
	if resp.StatusCode/100 != 2 {
		var ae apiError
		json.Unmarshal(body, &ae)
		return fmt.Errorf("docker API %s %s: %s: %s", method, path, resp.Status, ae.Message)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("docker API %s %s: %w", method, path, err)
	}
	return nil
}

// inspectJSON is the part of GET /containers/{id}/json read here.
type inspectJSON struct {
	ID     string `json:"Id"`
	Name   string `json:"Name"`
	Image  string `json:"Image"` // the image id
	Config struct {
		Image  string            `json:"Image"`
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	State struct {
		Pid int `json:"Pid"`
	} `json:"State"`
}

// Inspect returns the container with id, from the cache when it was
// inspected recently.
func (d *Docker) Inspect(ctx context.Context, id string) (Container, error) {
	now := time.Now()
	d.mu.Lock()
	if c, ok := d.cache[id]; ok && (c.err == nil && now.Sub(c.at) < cacheHit || c.err != nil && now.Sub(c.at) < cacheMiss) {
		d.mu.Unlock()
		return c.c, c.err
	}
	d.mu.Unlock()
	var ij inspectJSON
	err := d.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/json", &ij)
	c := Container{ID: ij.ID, Name: strings.TrimPrefix(ij.Name, "/"), Image: ij.Config.Image, ImageID: ij.Image,
		Labels: ij.Config.Labels, Pid: ij.State.Pid, Runtime: "docker"}
	if err != nil {
		c = Container{}
	}
	if ctx.Err() == nil {
		d.put(id, &cached{c: c, err: err, at: now})
	}
	return c, err
}

func (d *Docker) put(id string, c *cached) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.cache[id]; !ok {
		d.order = append(d.order, id)
	}
	d.cache[id] = c
	for len(d.order) > cacheSize {
		delete(d.cache, d.order[0])
		d.order = d.order[1:]
	}
}

// Forget drops id from the cache (the container died).
func (d *Docker) Forget(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.cache[id]; !ok {
		return
	}
	delete(d.cache, id)
	for i, o := range d.order {
		if o == id {
			d.order = append(d.order[:i], d.order[i+1:]...)
			break
		}
	}
}

// Running lists the ids of the running containers.
func (d *Docker) Running(ctx context.Context) ([]string, error) {
	var list []struct {
		ID string `json:"Id"`
	}
	if err := d.do(ctx, http.MethodGet, "/containers/json", &list); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(list))
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

// Kill sends SIGKILL to the container's processes.
func (d *Docker) Kill(ctx context.Context, id string) error {
	return d.do(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/kill?signal=KILL", nil)
}

// Event is one container event of the runtime.
type Event struct {
	ID     string // the container
	Action string // start, die, ...
}

// Events calls fn for each container start and die event until ctx ends
// or the stream breaks (the error says why).
func (d *Docker) Events(ctx context.Context, fn func(Event)) error {
	filters := url.QueryEscape(`{"type":["container"],"event":["start","die"]}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/events?filters="+filters, nil)
	if err != nil {
		return err
	}
	resp, err := d.stream.Do(req)
	if err != nil {
		return fmt.Errorf("docker events at %s: %w", d.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("docker events: %s", resp.Status)
	}
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var ev struct {
			Type   string `json:"Type"`
			Action string `json:"Action"`
			Actor  struct {
				ID string `json:"ID"`
			} `json:"Actor"`
		}
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("docker events: %w", err)
		}
		if ev.Type == "container" && ev.Actor.ID != "" {
			fn(Event{ID: ev.Actor.ID, Action: ev.Action})
		}
	}
}
