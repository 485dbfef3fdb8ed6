package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/interceptor"
)

// watchConfig reports changes to sluiced's own files (the config file, the
// rules directory, the ruleset signing key) made by job tasks, as tamper
// events of kind config_change. fanotify says which process made each
// change; the kernel's job mark (looked up through a pidfd) says whether it
// is a job's. A change by a process that exited before sluiced could look
// is reported too, saying so: whether it was a job's cannot be told then.
// Changes by other processes (an operator's editor) are logged at info.
func watchConfig(ctx context.Context, cfg *Config, ic *interceptor.Interceptor, report func(interceptor.TamperEvent), log hclog.Logger) error {
	type watch struct {
		dir    string
		handle []byte
		name   string // "" = every entry of dir
	}
	var watches []watch
	add := func(dir, name string) {
		fh, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
		if err != nil {
			log.Warn("cannot watch for changes", "path", filepath.Join(dir, name), "error", err)
			return
		}
		watches = append(watches, watch{dir: dir, handle: append(binary.NativeEndian.AppendUint32(binary.NativeEndian.AppendUint32(nil, uint32(fh.Size())), uint32(fh.Type())), fh.Bytes()...), name: name})
	}
	if cfg.Path != "" {
		add(filepath.Dir(cfg.Path), filepath.Base(cfg.Path))
	}
	if cfg.RulesDir != "" {
		add(cfg.RulesDir, "")
	}
	if cfg.RulesKeyPath != "" {
		add(filepath.Dir(cfg.RulesKeyPath), filepath.Base(cfg.RulesKeyPath))
	}
	if len(watches) == 0 {
		return nil
	}
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_REPORT_DFID_NAME, unix.O_RDONLY)
	if err != nil {
		return fmt.Errorf("fanotify: %w", err)
	}
	const mask = unix.FAN_MODIFY | unix.FAN_CLOSE_WRITE | unix.FAN_ATTRIB | unix.FAN_CREATE | unix.FAN_DELETE |
		unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO | unix.FAN_EVENT_ON_CHILD
	seen := map[string]bool{}
	for _, w := range watches {
		if seen[w.dir] {
			continue
		}
		seen[w.dir] = true
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD, mask, unix.AT_FDCWD, w.dir); err != nil {
			unix.Close(fd)
			return fmt.Errorf("fanotify mark %s: %w", w.dir, err)
		}
	}
	f := os.NewFile(uintptr(fd), "fanotify")
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	defer f.Close()

	// A write is several events (modify, close_write); one alert per
	// process and path within a second is enough.
	last := map[string]time.Time{}
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read fanotify: %w", err)
		}
		for b := buf[:n]; len(b) >= int(unsafe.Sizeof(unix.FanotifyEventMetadata{})); {
			md := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&b[0]))
			if md.Event_len < uint32(md.Metadata_len) || int(md.Event_len) > len(b) {
				break
			}
			ev := b[:md.Event_len]
			b = b[md.Event_len:]
			handle, name, ok := dfidName(ev[md.Metadata_len:])
			if !ok {
				continue
			}
			var path string
			for _, w := range watches {
				if bytes.Equal(handle, w.handle) && (w.name == "" || w.name == name) {
					path = filepath.Join(w.dir, name)
					break
				}
			}
			if path == "" || md.Pid <= 0 || md.Pid == int32(os.Getpid()) {
				continue
			}
			pid := uint32(md.Pid)
			key := fmt.Sprint(pid, path)
			if t, ok := last[key]; ok && time.Since(t) < time.Second {
				continue
			}
			if len(last) > 1024 {
				clear(last)
			}
			last[key] = time.Now()
			te, isJob := ic.NewTamperEvent("config_change", pid, path)
			switch {
			case isJob:
				report(te)
			case processGone(pid):
				te = interceptor.TamperEvent{Kind: "config_change", Time: time.Now(), PID: pid, TID: pid, Path: path,
					Comm: "(exited before sluiced could tell whether it was a job's)"}
				report(te)
			default:
				log.Info("configuration file changed", "path", path, "pid", pid)
			}
		}
	}
}

// dfidName reads a FAN_EVENT_INFO_TYPE_DFID_NAME record: the directory's
// file handle (size, type, bytes; as NameToHandleAt gives it) and the
// entry's name.
func dfidName(b []byte) (handle []byte, name string, ok bool) {
	for len(b) >= 4 {
		typ, l := b[0], int(binary.NativeEndian.Uint16(b[2:4]))
		if l < 4 || l > len(b) {
			return nil, "", false
		}
		rec := b[:l]
		b = b[l:]
		if typ != unix.FAN_EVENT_INFO_TYPE_DFID_NAME || len(rec) < 4+8+8 {
			continue
		}
		fh := rec[4+8:] // after the header and fsid
		size := int(binary.NativeEndian.Uint32(fh[0:4]))
		if len(fh) < 8+size {
			return nil, "", false
		}
		handle = fh[:8+size]
		rest := fh[8+size:]
		if i := bytes.IndexByte(rest, 0); i >= 0 {
			rest = rest[:i]
		}
		return handle, string(rest), true
	}
	return nil, "", false
}

func processGone(pid uint32) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, os.ErrNotExist)
}
