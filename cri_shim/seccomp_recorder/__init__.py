"""The seccomp profile recorder (issue 13 item 3).

A container whose config or pod carries the annotation `seccomp-recorder.cri-shim.io/profile`
(`annotation`) is traced with ptrace from the moment its runtime has created it until its last
process exits; the system calls it made become an OCI seccomp profile (`profile`, names from
`syscall_names`) in the configured directory, usable at once as a Localhost profile.

- `annotation`: the annotation's syntax and where its file goes (pure).
- `syscall_names`: audit architecture + number -> name, from python-ptrace's tables.
- `profile`: the observed calls (plus the runtime's own tail) -> the profile document (pure).
- `tracer`: the tracer program, a process of its own (`python -m cri_shim.seccomp_recorder.tracer`).
- `launcher`: the daemon's side: start a tracer, wait until it has attached, collect it.
"""
