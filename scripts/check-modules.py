#!/usr/bin/env python3
"""The module rules of Leasehold, checked from `swift package dump-package` and the sources.

- LeaseholdElection (leader election on its own) must not depend, directly or through other
  targets of this package, on CLibYAML or CProcessSupervisor, and neither it nor the
  targets it depends on may import Foundation.
- Every module a target's sources import is declared in Package.swift (or is a system
  module), so a build never works only by accident of another target's dependencies.

Exit 0 when the rules hold; 1 with one line per violation otherwise.
"""
import json, os, re, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = {"CLibYAML", "CProcessSupervisor"}
SYSTEM = {"Foundation", "FoundationEssentials", "FoundationInternationalization", "Dispatch", "Glibc", "Musl", "Darwin", "Synchronization",
          "Testing", "XCTest", "PackageDescription", "_Concurrency", "Android", "WinSDK"}

package = json.loads(subprocess.run(["swift", "package", "dump-package"], cwd=ROOT, check=True,
                                    capture_output=True, text=True).stdout)
targets = {t["name"]: t for t in package["targets"]}
problems = []


def direct(name):
    """(local target names, product names) a target depends on."""
    local, products = set(), set()
    for dep in targets[name].get("dependencies", []):
        if "byName" in dep:
            (local if dep["byName"][0] in targets else products).add(dep["byName"][0])
        elif "target" in dep:
            local.add(dep["target"][0])
        elif "product" in dep:
            products.add(dep["product"][0])
    return local, products


def closure(name):
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        for dep in direct(current)[0]:
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def source_dir(name):
    t = targets[name]
    if t.get("path"):
        return os.path.join(ROOT, t["path"])
    base = "Tests" if t["type"] == "test" else "Sources"
    return os.path.join(ROOT, base, name)


def imports(name):
    found = {}
    for dirpath, _, files in os.walk(source_dir(name)):
        for f in files:
            if not f.endswith(".swift"):
                continue
            path = os.path.join(dirpath, f)
            for lineno, line in enumerate(open(path, encoding="utf-8"), 1):
                m = re.match(r"\s*(?:@_exported\s+|@testable\s+|@preconcurrency\s+|(?:package|public|internal)\s+)*import\s+(?:struct\s+|enum\s+|class\s+|func\s+)?([A-Za-z_][A-Za-z0-9_]*)", line)
                if m:
                    found.setdefault(m.group(1), f"{os.path.relpath(path, ROOT)}:{lineno}")
    return found


election = closure("LeaseholdElection")
for bad in sorted(FORBIDDEN & (election | {"LeaseholdElection"})):
    problems.append(f"LeaseholdElection depends on {bad}: the election module must stay free of YAML and process code")
for name in sorted(election | {"LeaseholdElection"}):
    if targets[name]["type"] == "system":
        continue
    for module in ("Foundation", "FoundationEssentials"):
        where = imports(name).get(module)
        if where:
            problems.append(f"{where}: {name} imports {module}, but the election links no Foundation")

for name, t in sorted(targets.items()):
    if t["type"] == "system":
        continue
    local, prods = direct(name)
    declared = local | prods | {name}
    for module, where in sorted(imports(name).items()):
        if module in SYSTEM or module in declared:
            continue
        problems.append(f"{where}: {name} imports {module}, which its Package.swift entry does not declare")

for line in problems:
    print(line)
if problems:
    sys.exit(1)
print(f"module rules hold ({len(targets)} targets; LeaseholdElection depends on {', '.join(sorted(election)) or 'nothing local'})")
