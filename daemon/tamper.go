package daemon

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/interceptor/identity"
)

// tamperSummary says what each kind of tamper event means.
var tamperSummary = map[string]string{
	"cgroup_move":    "a job process was moved out of its job cgroup",
	"signal_sluiced": "a job process sent a signal to sluiced",
	"ptrace_sluiced": "a job process called ptrace on sluiced",
	"bpf":            "a job process called bpf()",
	"module_load":    "a job process loaded or removed a kernel module",
	"pin_removal":    "a job process removed or renamed a path under /sys/fs/bpf",
	"config_change":  "a job process changed sluiced's configuration or ruleset",
}

// tamperReporter turns a tamper event into an alert: a log line at error
// level, the metric, a recording of its own (and so the live export), and
// the approvals webhook. It never blocks the kernel's reader for long: the
// identity lookup is bounded.
type tamperReporter struct {
	mu    sync.Mutex
	count map[string]uint64

	log    hclog.Logger
	met    *metrics
	rec    *recorder
	broker *approve.Broker
	idr    *identity.Resolver
}

// counts returns the alerts reported since the daemon started, by kind.
func (t *tamperReporter) counts() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.count) == 0 {
		return nil
	}
	out := make(map[string]uint64, len(t.count))
	for k, v := range t.count {
		out[k] = v
	}
	return out
}

func (t *tamperReporter) report(ctx context.Context, ev interceptor.TamperEvent) {
	t.mu.Lock()
	if t.count == nil {
		t.count = map[string]uint64{}
	}
	t.count[ev.Kind]++
	t.mu.Unlock()
	ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
	id := t.idr.Resolve(ictx, ev.PID)
	if id.Outcome == identity.OutcomeGone && ev.PPID != 0 {
		// A short-lived actor (a kill, a one-shot tool) is often gone by
		// now; its parent, usually the job's shell, belongs to the same job.
		id = t.idr.Resolve(ictx, ev.PPID)
		if id.Reason != "" {
			id.Reason = "the process has exited; identity of its parent: " + id.Reason
		}
	}
	cancel()
	summary := tamperSummary[ev.Kind]
	if summary == "" {
		summary = "a job process did " + ev.Kind
	}
	fields := map[string]string{
		"kind": ev.Kind, "pid": strconv.FormatUint(uint64(ev.PID), 10), "tid": strconv.FormatUint(uint64(ev.TID), 10),
		"comm": ev.Comm, "ppid": strconv.FormatUint(uint64(ev.PPID), 10), "job_cgroup": ev.JobCgroupPath, "identity.level": id.Identity.Level, "identity.reason": id.Reason,
		"time": ev.Time.UTC().Format(time.RFC3339Nano),
	}
	if id.Job.Kind != "" {
		fields["identity.job"] = id.Job.String()
	}
	for k, v := range id.Identity.Claims {
		fields["claim."+k] = v
	}
	switch ev.Kind {
	case "cgroup_move":
		fields["moved_pid"] = strconv.FormatUint(uint64(ev.Target), 10)
		fields["to_cgroup"] = ev.Path
	case "signal_sluiced":
		fields["target_pid"] = strconv.FormatUint(uint64(ev.Target), 10)
		fields["signal"] = strconv.FormatUint(ev.Arg, 10)
	case "ptrace_sluiced":
		fields["target_pid"] = strconv.FormatUint(uint64(ev.Target), 10)
	case "bpf":
		fields["bpf_command"] = strconv.FormatUint(uint64(ev.Target), 10)
	case "module_load":
		fields["syscall"] = strconv.FormatUint(ev.Arg, 10)
	case "pin_removal", "config_change":
		fields["path"] = ev.Path
	}
	kv := []any{"kind", ev.Kind, "pid", ev.PID, "comm", ev.Comm, "job_cgroup", ev.JobCgroupPath,
		"identity", id.Identity.Level, "job", fields["identity.job"], "identity_reason", id.Reason, "at", ev.Time.UTC().Format(time.RFC3339Nano)}
	for _, k := range []string{"moved_pid", "to_cgroup", "target_pid", "signal", "bpf_command", "syscall", "path"} {
		if v, ok := fields[k]; ok {
			kv = append(kv, k, v)
		}
	}
	if r := id.Identity.Claims["repository"]; r != "" {
		kv = append(kv, "repository", r)
	}
	session, err := t.rec.alert(ev, summary, fields, id)
	if err != nil {
		kv = append(kv, "recording_error", err)
	} else {
		kv = append(kv, "session", session)
	}
	if n := t.rec.noteJob(fields["identity.job"], record.Event{Type: record.TypeNote, Time: ev.Time, Kind: "tamper:" + ev.Kind,
		Verdict: "alert", Reason: summary, Fields: fields}); n > 0 {
		kv = append(kv, "job_sessions", n)
	}
	t.log.Error("tamper: "+summary, kv...)
	t.met.tamper(ev.Kind)
	if t.broker != nil {
		t.broker.Alert(approve.Alert{Kind: ev.Kind, Summary: summary, Time: ev.Time, Fields: fields})
	}
}

// alert writes a sealed recording of one tamper event: who did what, under
// which job identity. It is listed by sluice sessions list (protocol
// "tamper") and streamed to the live export.
func (r *recorder) alert(ev interceptor.TamperEvent, summary string, fields map[string]string, id identity.Result) (string, error) {
	sid := newSessionID(ev.Time)
	w, err := record.Create(r.dir, sid, r.keys, r.opts)
	if err != nil {
		return "", err
	}
	var tee func(record.Event)
	if r.live != nil {
		tee = r.live.tee(sid)
	}
	if r.events != nil {
		tee = eventsTee(r.events, sid, ev.Kind, tee)
	}
	events := []record.Event{
		{Type: record.TypeSessionStart, Time: ev.Time, Fields: fields, Verdict: "alert", Reason: summary},
		{Type: record.TypeNote, Time: ev.Time, Kind: "tamper:" + ev.Kind, Verdict: "alert", Reason: summary, Fields: fields},
		{Type: record.TypeSessionEnd, Time: ev.Time, Reason: summary},
	}
	for _, e := range events {
		if err := w.Append(context.Background(), e); err != nil {
			w.Close()
			return "", err
		}
		if tee != nil {
			tee(e)
		}
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	idx := &store.Session{ID: sid, Path: w.Path(), Start: ev.Time, End: ev.Time, Status: store.StatusSealed,
		Protocol: "tamper", Target: ev.Kind, PID: ev.PID, Comm: ev.Comm, IdentityLevel: id.Identity.Level,
		Repository: id.Identity.Claims["repository"], Ref: id.Identity.Claims["ref"], RunID: id.Identity.Claims["run_id"],
		Actor: id.Identity.Claims["actor"], Level: record.Metadata.String(), Verdicts: []string{"alert"}}
	if err := r.index.Put(idx); err != nil {
		return sid, fmt.Errorf("index the alert: %w", err)
	}
	return sid, nil
}
