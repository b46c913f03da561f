"""A stand-in C++ compiler for the kernel-cache tests (CXX="python copying_compiler.py"): the flag probes
(-E) succeed; compiling a source (-c) writes an empty object file; a build's link appends a line to
$TF_CHARRNN_BUILD_LOG and writes the real library named by $TF_CHARRNN_REAL_LIBRARY to its -o file
slowly, half of it, a pause, then the rest, as a linker's output grows, so that a concurrent reader of
that file would see half a library."""

import os
import sys
import time

arguments = sys.argv[1:]
if "-o" in arguments:
    output = arguments[arguments.index("-o") + 1]
    if "-c" in arguments:
        open(output, "wb").close()
        sys.exit(0)
    with open(os.environ["TF_CHARRNN_BUILD_LOG"], "a") as log:
        log.write(f"build by pid {os.getppid()}\n")
    with open(os.environ["TF_CHARRNN_REAL_LIBRARY"], "rb") as f:
        library = f.read()
    with open(output, "wb") as f:
        f.write(library[: len(library) // 2])
        f.flush()
        time.sleep(1)
        f.write(library[len(library) // 2 :])
