# want 4:15 "Invalid address"
target "everything" {
  protocol = "tcp"
  address  = ["*:1-65535"]
}
