package bpf

// The generated *_bpfel.go and *_bpfel.o files are committed so that a plain
// `go build` needs no clang. `make generate` rebuilds them.

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I./headers" -target bpfel -type origin -type peer_key -type target_key -type target_val -type config -type netcfg connect4 connect4.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I./headers" -target bpfel connect6 connect6.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I./headers" -target bpfel sockops sockops.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I./headers" -target bpfel getpeername4 getpeername4.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I./headers" -target bpfel getpeername6 getpeername6.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I./headers" -target bpfel -type tamper_event -type job_mark jobs jobs.c
