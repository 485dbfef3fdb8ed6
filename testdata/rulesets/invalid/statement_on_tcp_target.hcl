# want 8:17 "statement used on a policy without postgres or mysql targets"
target "cache" {
  protocol = "tcp"
  address  = ["10.0.0.9:6379"]
}
policy "p" {
  targets = ["cache"]
  deny { when = statement.kind == "connect" && process.uid == 0 }
}
