#!/usr/bin/env python3
"""The boot partition's pieces, shared by the offline assembler (image/build)
and Buildroot's post-image script (board/common/post-image.sh).

    image/uki.py --stub linuxx64.efi.stub --kernel bzImage [--initrd FILE]
                 [--cmdline TEXT] --version V --board B [--revision R] --out FILE

makes a unified kernel image: systemd's EFI stub with .osrel, .cmdline,
.linux and .initrd sections placed after the stub's own sections (Buildroot's
bzImage carries its initramfs and command line: no --initrd, no --cmdline).
systemd-boot starts such images from EFI/Linux/ and sorts them by .osrel's
IMAGE_ID and IMAGE_VERSION (newest first); `mxrack update bundle` reads
IMAGE_VERSION and MXRACK_BOARD from the same section, so a bundle's version
is the one systemd-boot sorts by. Needs objcopy and objdump (binutils).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

# systemd-boot's configuration: no menu, no command-line editor (the console
# would otherwise be a way around the login), only our entries.
LOADER_CONF = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\n"


def efi_program(stub, kernel, initrd, cmdline, dest, workdir, image_version, board, revision):
    """Writes the unified kernel image `dest`; returns None, or why not.
    `initrd` and `cmdline` may be None (built into the kernel)."""
    objcopy = shutil.which("objcopy")
    if not objcopy or not shutil.which("objdump"):
        return "objcopy/objdump (binutils) missing"
    osrel = os.path.join(workdir, "os-release")
    with open(osrel, "w") as f:
        f.write(
            'NAME="mxrack"\nID=mxrack\nIMAGE_ID=mxrack\n'
            f"IMAGE_VERSION={image_version}\n"
            f'PRETTY_NAME="mxrack mail appliance {image_version}"\n'
            f"MXRACK_BOARD={board}\nMXRACK_REVISION={revision}\n"
        )
    parts = [(".osrel", osrel)]
    if cmdline is not None:
        cmd_file = os.path.join(workdir, "cmdline")
        with open(cmd_file, "w") as f:
            f.write(cmdline + "\0")
        parts.append((".cmdline", cmd_file))
    parts.append((".linux", kernel))
    if initrd is not None:
        parts.append((".initrd", initrd))
    r = subprocess.run(["objdump", "-h", "-w", stub], capture_output=True, text=True, check=False)
    end = 0
    for line in r.stdout.splitlines():
        cols = line.split()
        if len(cols) > 4 and cols[0].isdigit():
            end = max(end, int(cols[3], 16) + int(cols[2], 16))
    if end == 0:
        return f"objdump read no sections from {stub}"
    align = 0x1000

    def up(v):
        return (v + align - 1) // align * align

    vma = up(end)
    sections = []
    for name, path in parts:
        sections += [f"--add-section={name}={path}", f"--change-section-vma={name}=0x{vma:x}"]
        vma = up(vma + os.path.getsize(path))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    r = subprocess.run([objcopy, *sections, stub, dest], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"objcopy failed: {r.stderr.strip()}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stub", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd")
    ap.add_argument("--cmdline")
    ap.add_argument("--version", required=True)
    ap.add_argument("--board", required=True)
    ap.add_argument("--revision", default="unknown")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not all(p.isdigit() for p in args.version.split(".")):
        sys.exit(f"image/uki.py: --version {args.version!r}: dotted numbers expected")
    with tempfile.TemporaryDirectory() as work:
        why = efi_program(args.stub, args.kernel, args.initrd, args.cmdline, args.out, work,
                          args.version, args.board, args.revision)
    if why:
        sys.exit(f"image/uki.py: {why}")


if __name__ == "__main__":
    main()
