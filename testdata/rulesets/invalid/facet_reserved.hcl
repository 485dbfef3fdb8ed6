# want 8:17 "ssh is reserved"
target "bastion" {
  protocol = "ssh"
  address  = ["10.0.0.7:22"]
}
policy "p" {
  targets = ["bastion"]
  deny { when = ssh.command == "sudo su" }
}
