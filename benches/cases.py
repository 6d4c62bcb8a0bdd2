#!/usr/bin/env python3
"""Benchmark cases for benches/run.sh: generate build contexts and apply the `edit` change.

    cases.py gen  CASE DIR REGISTRY   write CASE's context (Dockerfile included) into DIR
    cases.py edit CASE DIR            change one source/context file in DIR
    cases.py list                     print the case names

Every context is deterministic (fixed seeds), so kiln and BuildKit get byte-identical input.
Base images are REGISTRY/busybox:latest and REGISTRY/debian-gcc:latest (run.sh seeds them).
"""

import os
import random
import sys

CASES = ["cprog", "runs30", "parallel4", "ctx10k", "layer256"]

# busybox sh loop iterations per parallel4 stage (about 2-4 s of one core each).
PARALLEL_LOOP = int(os.environ.get("BENCH_PARALLEL_LOOP", "1500000"))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def c_unit(i, rng):
    """One C file: a few functions with loops and a switch, enough for gcc -O2 to chew on."""
    lines = ["#include \"prog.h\"", "#define EDIT_MARK 0", ""]
    helpers = []
    for j in range(8):
        name = f"f{i:03d}_{j}"
        helpers.append(name)
        k = [rng.randrange(1, 1 << 30) for _ in range(6)]
        lines += [
            f"static unsigned long {name}(unsigned long x) {{",
            f"    unsigned long acc = {k[0]}UL + EDIT_MARK;",
            f"    for (int i = 0; i < {100 + rng.randrange(400)}; i++) {{",
            "        switch ((x + i) & 7) {",
            f"        case 0: acc = acc * {k[1] | 1}UL + x; break;",
            f"        case 1: acc ^= (acc >> 13) + {k[2]}UL; break;",
            f"        case 2: acc += (x << 3) ^ {k[3]}UL; break;",
            f"        case 3: acc = (acc << 7) | (acc >> 57); break;",
            f"        case 4: acc -= x * {k[4]}UL; break;",
            "        case 5: acc ^= acc << 11; break;",
            f"        case 6: acc += {k[5]}UL / (1 + (x & 255)); break;",
            "        default: acc = ~acc + i; break;",
            "        }",
            "        x = x * 2862933555777941757UL + 3037000493UL;",
            "    }",
            "    return acc;",
            "}",
            "",
        ]
    lines.append(f"unsigned long unit{i:03d}(unsigned long x) {{")
    lines.append("    unsigned long r = x;")
    for name in helpers:
        lines.append(f"    r ^= {name}(r + {rng.randrange(1000)}UL);")
    lines += ["    return r;", "}", ""]
    return "\n".join(lines)


def gen_cprog(d, reg):
    rng = random.Random(60)
    n = 60
    header = ["#ifndef PROG_H", "#define PROG_H"]
    header += [f"unsigned long unit{i:03d}(unsigned long x);" for i in range(n)]
    header += ["#endif", ""]
    write(f"{d}/src/prog.h", "\n".join(header))
    for i in range(n):
        write(f"{d}/src/unit{i:03d}.c", c_unit(i, rng))
    main = ["#include <stdio.h>", "#include \"prog.h\"", "", "int main(void) {",
            "    unsigned long r = 1;"]
    main += [f"    r ^= unit{i:03d}({i + 1}UL);" for i in range(n)]
    main += ["    printf(\"checksum %lx\\n\", r);", "    return 0;", "}", ""]
    write(f"{d}/src/main.c", "\n".join(main))
    write(f"{d}/Makefile", (
        "CC ?= gcc\n"
        "CFLAGS ?= -O2 -Wall\n"
        "SRCS := $(sort $(wildcard src/*.c))\n"
        "OBJS := $(SRCS:.c=.o)\n"
        "prog: $(OBJS)\n"
        "\t$(CC) -static -o $@ $(OBJS)\n"
        "src/%.o: src/%.c src/prog.h\n"
        "\t$(CC) $(CFLAGS) -Isrc -c -o $@ $<\n"
    ))
    write(f"{d}/Dockerfile", (
        f"FROM {reg}/debian-gcc:latest AS build\n"
        "WORKDIR /src\n"
        "COPY . .\n"
        "RUN make -j\"$(nproc)\" prog\n"
        "\n"
        f"FROM {reg}/busybox:latest\n"
        "COPY --from=build /src/prog /usr/local/bin/prog\n"
        "RUN /usr/local/bin/prog > /checksum.txt && cat /checksum.txt\n"
        "CMD [\"/usr/local/bin/prog\"]\n"
    ))


def gen_runs30(d, reg):
    write(f"{d}/stamp.txt", "stamp 0\n")
    df = [f"FROM {reg}/busybox:latest", "COPY stamp.txt /stamp.txt"]
    df += [f"RUN echo {i} > /f{i}" for i in range(1, 31)]
    df += ["RUN cat /f* | wc -l", ""]
    write(f"{d}/Dockerfile", "\n".join(df))


def gen_parallel4(d, reg):
    df = []
    for s in range(1, 5):
        write(f"{d}/seed{s}.txt", f"seed {s} 0\n")
        df += [
            f"FROM {reg}/busybox:latest AS s{s}",
            f"COPY seed{s}.txt /seed",
            f"RUN i=0; while [ $i -lt {PARALLEL_LOOP} ]; do i=$((i+1)); done; "
            f"cat /seed > /out{s}; echo $i >> /out{s}",
            "",
        ]
    df.append(f"FROM {reg}/busybox:latest")
    df += [f"COPY --from=s{s} /out{s} /out{s}" for s in range(1, 5)]
    df += ["RUN cat /out1 /out2 /out3 /out4", ""]
    write(f"{d}/Dockerfile", "\n".join(df))


def gen_ctx10k(d, reg):
    rng = random.Random(10000)
    n = 0
    for a in range(10):
        for b in range(10):
            for c in range(100):
                size = rng.randrange(16, 512)
                body = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789\n") for _ in range(size))
                write(f"{d}/tree/{a:02d}/{b:02d}/file{c:03d}.txt", f"file {n}\n{body}\n")
                n += 1
    write(f"{d}/Dockerfile", (
        f"FROM {reg}/busybox:latest\n"
        "COPY . /ctx\n"
        "RUN find /ctx -type f | wc -l > /count && cat /count\n"
    ))


def gen_layer256(d, reg):
    write(f"{d}/stamp.txt", "stamp 0\n")
    write(f"{d}/Dockerfile", (
        f"FROM {reg}/busybox:latest\n"
        "COPY stamp.txt /stamp.txt\n"
        "RUN head -c 268435456 /dev/urandom > /big && ls -l /big\n"
    ))


def edit(case, d):
    """The `edit` scenario: one changed file, as a developer would make between builds."""
    if case == "cprog":
        path = f"{d}/src/unit030.c"
        with open(path) as f:
            text = f.read()
        write(path, text.replace("#define EDIT_MARK 0", "#define EDIT_MARK 1", 1))
    elif case in ("runs30", "layer256"):
        write(f"{d}/stamp.txt", "stamp 1\n")
    elif case == "parallel4":
        write(f"{d}/seed2.txt", "seed 2 1\n")
    elif case == "ctx10k":
        with open(f"{d}/tree/05/05/file050.txt", "a") as f:
            f.write("edited\n")
    else:
        raise SystemExit(f"unknown case {case}")


def main(argv):
    if len(argv) >= 2 and argv[1] == "list":
        print("\n".join(CASES))
    elif len(argv) == 5 and argv[1] == "gen" and argv[2] in CASES:
        os.makedirs(argv[3], exist_ok=True)
        globals()["gen_" + argv[2]](argv[3], argv[4])
    elif len(argv) == 4 and argv[1] == "edit" and argv[2] in CASES:
        edit(argv[2], argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
