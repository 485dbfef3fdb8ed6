package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStoreListFilterRetain(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for i, repo := range []string{"acme/api", "acme/web", "acme/api"} {
		p := filepath.Join(dir, repo[5:]+string(rune('0'+i))+".rec")
		os.WriteFile(p, make([]byte, 100), 0o600)
		status := StatusSealed
		if i == 2 {
			status = StatusActive
		}
		verdicts := []string{"allow"}
		if i == 1 {
			verdicts = append(verdicts, "deny")
		}
		if err := s.Put(&Session{ID: base.Add(time.Duration(i)*time.Hour).Format("20060102T150405Z") + "-x", Path: p,
			Start: base.Add(time.Duration(i) * time.Hour), Status: status, Repository: repo, Target: "db", Verdicts: verdicts}); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := s.List(Filter{})
	if len(all) != 3 || all[0].Repository != "acme/api" || !all[0].Start.After(all[1].Start) {
		t.Fatalf("list = %+v, want 3 newest first", all)
	}
	if l, _ := s.List(Filter{Repo: "acme/api"}); len(l) != 2 {
		t.Errorf("repo filter: %d", len(l))
	}
	if l, _ := s.List(Filter{Verdict: "deny"}); len(l) != 1 || l[0].Repository != "acme/web" {
		t.Errorf("verdict filter: %+v", l)
	}
	if l, _ := s.List(Filter{Since: base.Add(90 * time.Minute)}); len(l) != 1 {
		t.Errorf("since filter: %d", len(l))
	}
	if got, err := s.Get("20261101T13"); err != nil || got.Repository != "acme/web" {
		t.Errorf("get by prefix: %+v %v", got, err)
	}
	if _, err := s.Get("2026"); err == nil {
		t.Error("an ambiguous prefix was accepted")
	}
	if n, _ := s.MarkInterrupted(); n != 1 {
		t.Errorf("marked %d interrupted, want 1", n)
	}
	removed, err := s.Retain(0, 150)
	if err != nil || len(removed) != 2 {
		t.Fatalf("retain by size removed %v, %v; want the 2 oldest", removed, err)
	}
	if l, _ := s.List(Filter{}); len(l) != 1 {
		t.Errorf("after retain: %d sessions", len(l))
	}
}
